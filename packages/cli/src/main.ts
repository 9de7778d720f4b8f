/** `bitorrent` command dispatcher: each subcommand lives in its own module and is loaded on demand. */
type Command = { summary: string; load: () => Promise<(argv: string[]) => Promise<number | void>> };

const commands: Record<string, Command> = {
  download: { summary: 'download a torrent (magnet, .torrent file or info-hash)', load: async () => (await import('./commands/download.js')).run },
  seed: { summary: 'seed a file or folder (or a .torrent whose data is present)', load: async () => (await import('./commands/seed.js')).run },
  create: { summary: 'create a .torrent from a file or folder', load: async () => (await import('./commands/create.js')).run },
  info: { summary: 'show what a .torrent or magnet link holds', load: async () => (await import('./commands/info.js')).run },
  tracker: { summary: 'run a BitTorrent tracker (HTTP + UDP)', load: async () => (await import('@bitorrent/tracker/cli')).runTrackerCli },
  ledger: { summary: 'run or verify the private token ledger', load: async () => (await import('@bitorrent/ledger/cli')).runLedgerCli },
  wallet: { summary: 'manage your BTT wallet (keys, balance, payments)', load: async () => (await import('@bitorrent/ledger/cli')).runWalletCli },
  dht: { summary: 'run a standalone DHT node or look up peers', load: async () => (await import('@bitorrent/dht/cli')).runDhtCli },
  demo: { summary: 'BitTorrent Speed demo: a paying swarm on loopback with an embedded ledger', load: async () => (await import('@bitorrent/speed/demo')).runDemoCli },
};

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
