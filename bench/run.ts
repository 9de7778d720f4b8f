/**
 * Benchmark dispatcher: `npm run bench -- <name> [args]` runs bench/<name>.ts in its own process.
 * Each benchmark measures bitorrent beside its anchor in the same run and prints one JSON object as its last line.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const names = readdirSync(here).filter((f) => f.endsWith('.ts') && f !== 'run.ts').map((f) => f.slice(0, -3));
const [name, ...rest] = process.argv.slice(2);
if (!name || !existsSync(join(here, `${name}.ts`))) {
  console.error(`usage: npm run bench -- <name> [options]\nbenchmarks: ${names.join(', ') || '(none yet)'}`);
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', '--expose-gc', join(here, `${name}.ts`), ...rest], { stdio: 'inherit' });
process.exit(r.status ?? 1);
