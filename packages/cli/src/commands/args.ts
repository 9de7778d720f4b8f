/** Command-line parsing shared by every subcommand (kept free of heavy imports: create and info load only this). */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {}

/**
 * node:util parseArgs, with its errors (unknown option, missing value…) turned into a UsageError so the
 * command can exit 2 like other usage mistakes, instead of 1 as for runtime failures.
 */
export function parseCommandArgs<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')) throw new UsageError((err as Error).message);
    throw err;
  }
}

type CommandOptions = NonNullable<ParseArgsConfig['options']>;
type ParsedValues<O extends CommandOptions> = ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; options: O }>>['values'];

/**
 * The prologue every command shares: parse the options, answer --help, require exactly one positional.
 * Gives the values and that positional, or the exit code to return (0 after --help, 2 for a usage error).
 */
export function parseCommandLine<O extends CommandOptions>(
  command: string,
  argv: string[],
  options: O,
  help: string,
  expects: string,
): { values: ParsedValues<O>; positional: string } | number {
  let parsed;
  try {
    parsed = parseCommandArgs({ args: argv, allowPositionals: true, options });
  } catch (err) {
    if (err instanceof UsageError) return reportUsageError(command, err);
    throw err;
  }
  if ((parsed.values as { help?: boolean }).help) {
    console.log(help);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    console.error(`bitorrent ${command}: expected ${expects}\n\n${help}`);
    return 2;
  }
  return { values: parsed.values as ParsedValues<O>, positional: parsed.positionals[0] };
}

/** Print a usage error the way main.ts prints errors, plus a hint, and give exit code 2. */
export function reportUsageError(command: string, err: UsageError): number {
  console.error(`bitorrent ${command}: ${err.message.split('\n')[0]}\nRun 'bitorrent ${command} --help' for the options.`);
  return 2;
}
