#!/usr/bin/env node
// Runs the whole suite with node:test on the TypeScript sources (via tsx).
//   node scripts/test.mjs            all tests, interop with real clients included
//   node scripts/test.mjs --unit     skip *.interop.test.ts (real Debian clients)
//   node scripts/test.mjs FILTER...  only test files whose path contains one of the filters
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const filters = args.filter((a) => !a.startsWith('--'));

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

let files = [];
for (const pkg of readdirSync(join(root, 'packages'))) {
  const t = join(root, 'packages', pkg, 'test');
  try { statSync(t); } catch { continue; }
  walk(t, files);
}
files = files.map((f) => relative(root, f)).sort();
if (unitOnly) files = files.filter((f) => !f.endsWith('.interop.test.ts'));
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const r = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=600000', ...files],
  { stdio: 'inherit', cwd: root, env: { ...process.env, NODE_OPTIONS: '' } },
);
process.exit(r.status ?? 1);
