/** `bitorrent` command dispatcher: each subcommand lives in its own module and is loaded on demand. */
type Command = { summary: string; load: () => Promise<(argv: string[]) => Promise<number | void>> };

const commands: Record<string, Command> = {};

export function usage(): string {
  const lines = ['usage: bitorrent <command> [options]', '', 'commands:'];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(10)} ${c.summary}`);
  lines.push('', "Run 'bitorrent <command> --help' for a command's options.");
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    console.log(usage());
    return;
  }
  const cmd = commands[name];
  if (!cmd) {
    console.error(`bitorrent: unknown command '${name}'\n\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  try {
    const run = await cmd.load();
    const code = await run(rest);
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    console.error(`bitorrent ${name}: ${err instanceof Error ? err.message : String(err)}`);
    if (process.env.BITORRENT_DEBUG) console.error(err);
    process.exitCode = 1;
  }
}
