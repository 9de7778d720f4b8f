/**
 * The `bitorrent demo` command end to end (real sessions on loopback, embedded SQLite ledger, real payments):
 * everyone completes and every wallet moved by exactly its accepted earnings − payments.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runDemoCli } from '../src/demo.js';

test('demo: small paying swarm completes and the ledger check passes', async () => {
  const out: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void out.push(a.map(String).join(' '));
  let code: number;
  try {
    code = await runDemoCli(['--size', '1', '--rate', '512', '--leecher-rate', '128', '--bidders', '2', '--free', '1', '--legacy', '1', '--timeout', '90', '--json']);
  } finally {
    console.log = orig;
  }
  const report = JSON.parse(out[out.length - 1]) as { ok: boolean; rows: { peer: string; kind: string; paid: string; earned: string; seconds: number | null }[] };
  assert.equal(code, 0, JSON.stringify(report));
  assert.equal(report.ok, true);
  for (const r of report.rows) if (r.kind !== 'seeder') assert.ok(r.seconds !== null, `${r.peer} did not complete`);
  const paid = report.rows.reduce((s, r) => s + BigInt(r.paid), 0n);
  const earned = report.rows.reduce((s, r) => s + BigInt(r.earned), 0n);
  assert.equal(paid, earned);
  assert.ok(paid > 0n, 'nobody paid anything');
  // Only bidders pay; legacy peers never do.
  for (const r of report.rows) if (r.kind !== 'bidder') assert.equal(r.paid, '0');
});

test('demo --help', async () => {
  const out: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void out.push(a.map(String).join(' '));
  try {
    assert.equal(await runDemoCli(['--help']), 0);
  } finally {
    console.log = orig;
  }
  assert.match(out.join('\n'), /usage: bitorrent demo/);
  await assert.rejects(runDemoCli(['--size', 'x']), /--size must be an integer/);
});
