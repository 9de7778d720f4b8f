/** `bitorrent dht` end to end on loopback: a node process, then announce / lookup / put / get against it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { runDhtCli } from '../src/cli.js';

const bin = fileURLToPath(new URL('../../cli/bin/bitorrent.js', import.meta.url));
const run = promisify(execFile);

test('bitorrent dht: --help and bad input', async () => {
  assert.equal(await runDhtCli(['--help']), 0);
  assert.equal(await runDhtCli(['frobnicate']), 2);
  await assert.rejects(runDhtCli(['lookup', 'nothex', '--bootstrap', '127.0.0.1:9']), /40 hex/);
  await assert.rejects(runDhtCli(['lookup', 'ab'.repeat(20), '--bootstrap', 'nope']), /invalid --bootstrap/);
});

test('bitorrent dht node / announce / lookup / put / get over loopback', { timeout: 60_000 }, async (t) => {
  const node = spawn(process.execPath, [bin, 'dht', 'node', '--port', '0', '--host', '127.0.0.1', '--bootstrap', '127.0.0.1:9', '--timeout', '5', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    if (node.exitCode === null) node.kill('SIGKILL');
  });
  const port = await new Promise<number>((resolve, reject) => {
    node.once('exit', (c) => reject(new Error(`node exited ${c}`)));
    createInterface({ input: node.stdout! }).on('line', (l) => {
      const e = JSON.parse(l) as { event: string; port?: number };
      if (e.event === 'listening') resolve(e.port!);
    });
  });
  const ih = 'cd'.repeat(20);
  const common = ['--bootstrap', `127.0.0.1:${port}`, '--port', '0', '--json', '--timeout', '20'];
  const ann = await run(process.execPath, [bin, 'dht', 'announce', ih, '--peer-port', '4321', '--host', '127.0.0.2', ...common]);
  assert.equal(JSON.parse(ann.stdout.trim().split('\n').pop()!).acked, 1);
  const scr = await run(process.execPath, [bin, 'dht', 'scrape', ih, '--host', '127.0.0.6', ...common]);
  assert.deepEqual(JSON.parse(scr.stdout.trim().split('\n').pop()!), { infoHash: ih, seeds: 0, peers: 1 });
  const look = await run(process.execPath, [bin, 'dht', 'lookup', ih, '--host', '127.0.0.3', ...common]);
  assert.deepEqual(JSON.parse(look.stdout.trim().split('\n').pop()!).peers, [{ host: '127.0.0.2', port: 4321 }]);
  const put = await run(process.execPath, [bin, 'dht', 'put', 'hello dht', '--host', '127.0.0.4', ...common]);
  const { target, stored } = JSON.parse(put.stdout.trim().split('\n').pop()!);
  assert.equal(stored, 1);
  const get = await run(process.execPath, [bin, 'dht', 'get', target, '--host', '127.0.0.5', ...common]);
  assert.equal(JSON.parse(get.stdout.trim().split('\n').pop()!).v, 'hello dht');
  node.kill('SIGTERM');
  await new Promise((r) => node.once('exit', r));
});
