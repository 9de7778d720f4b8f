// Smoke tests of `bitorrent create` and `bitorrent info`, spawning the real CLI entry point.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { encode } from '../src/bencode.js';
import { parseTorrent } from '../src/metainfo.js';

const BIN = resolve(import.meta.dirname, '../../cli/bin/bitorrent.js');

function cli(args: string[], cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, NODE_OPTIONS: '' } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', rej);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

function setup(t: { after(fn: () => unknown): void }) {
  const base = mkdtempSync(join(tmpdir(), 'bt-cli-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  mkdirSync(join(base, 'stuff', 'inner'), { recursive: true });
  writeFileSync(join(base, 'stuff', 'one.bin'), Buffer.alloc(100000, 7));
  writeFileSync(join(base, 'stuff', 'inner', 'two.txt'), 'hello world');
  return base;
}

test('create: writes a torrent with tiers, web seed, private, piece length in log2; prints info-hash and magnet', async (t) => {
  const base = setup(t);
  const r = await cli(['create', 'stuff', '-a', 'http://127.0.0.1:1/a,http://127.0.0.1:2/a', '-a', 'udp://127.0.0.1:3',
    '--web-seed', 'http://127.0.0.1:4/ws/', '--private', '--piece-length', '15', '--comment', 'hi there', '--no-date', '-o', 'out.torrent'], base);
  assert.equal(r.code, 0, r.stderr);
  const m = parseTorrent(readFileSync(join(base, 'out.torrent')));
  assert.equal(m.pieceLength, 32768);
  assert.equal(m.private, true);
  assert.equal(m.comment, 'hi there');
  assert.equal(m.creationDate, undefined);
  assert.deepEqual(m.announce, [['http://127.0.0.1:1/a', 'http://127.0.0.1:2/a'], ['udp://127.0.0.1:3']]);
  assert.deepEqual(m.urlList, ['http://127.0.0.1:4/ws/']);
  assert.match(r.stdout, new RegExp(`info-hash:  ${m.infoHashHex}`));
  assert.match(r.stdout, /pieces:     4 × 32 KiB/);
  assert.match(r.stdout, /size:       97.7 KiB in 2 files/);
  assert.match(r.stdout, /magnet:     magnet:\?xt=urn:btih:/);

  // Refuses to overwrite without --force; --json output; 256K suffix form.
  const again = await cli(['create', 'stuff', '-o', 'out.torrent'], base);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /'out.torrent' already exists \(use --force to overwrite\)/);
  const j = await cli(['create', 'stuff', '-l', '256K', '-o', 'out.torrent', '--force', '--json'], base);
  assert.equal(j.code, 0, j.stderr);
  const o = JSON.parse(j.stdout);
  assert.equal(o.pieceLength, 262144);
  assert.equal(o.pieces, 1);
  assert.equal(o.infoHash, parseTorrent(readFileSync(join(base, 'out.torrent'))).infoHashHex);

  // Default output name.
  const d = await cli(['create', 'stuff'], base);
  assert.equal(d.code, 0, d.stderr);
  assert.ok(existsSync(join(base, 'stuff.torrent')));
});

test('create: clear errors, exit codes, no stack traces', async (t) => {
  const base = setup(t);
  const cases: [string[], number, RegExp][] = [
    [['create', 'missing-dir'], 1, /bitorrent create: cannot read 'missing-dir': ENOENT/],
    [['create', 'stuff', '--piece-length', '3000'], 2, /--piece-length: must be a power of two/],
    [['create', 'stuff', '--piece-length', 'abc'], 2, /--piece-length: cannot parse 'abc'/],
    [['create', 'stuff', '-a', 'not a url'], 2, /'not a url' is not an http\(s\):\/\/, udp:\/\/ or ws\(s\):\/\/ URL/],
    [['create'], 2, /expected exactly one file or folder/],
  ];
  for (const [args, code, re] of cases) {
    const r = await cli(args, base);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  const h = await cli(['create', '--help'], base);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /usage: bitorrent create/);
});

test('info: .torrent (human and --json), magnet, bare info-hash, malformed input', async (t) => {
  const base = setup(t);
  assert.equal((await cli(['create', 'stuff', '-a', 'http://127.0.0.1:1/a', '-o', 's.torrent', '-l', '15'], base)).code, 0);
  const m = parseTorrent(readFileSync(join(base, 's.torrent')));
  const r = await cli(['info', 's.torrent'], base);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /name:       stuff/);
  assert.match(r.stdout, new RegExp(`info-hash:  ${m.infoHashHex}`));
  assert.match(r.stdout, /pieces:     4 × 32 KiB/);
  assert.match(r.stdout, /tier 0: http:\/\/127\.0\.0\.1:1\/a/);
  assert.match(r.stdout, /files \(2\):\n.*stuff\/inner\/two\.txt\n.*97\.7 KiB  stuff\/one\.bin/);
  const j = JSON.parse((await cli(['info', 's.torrent', '--json'], base)).stdout);
  assert.equal(j.infoHash, m.infoHashHex);
  assert.equal(j.files.length, 2);
  assert.deepEqual(j.trackers, [['http://127.0.0.1:1/a']]);

  const mag = await cli(['info', `magnet:?xt=urn:btih:${m.infoHashHex}&dn=x&tr=udp%3A%2F%2F127.0.0.1%3A5`, '--json'], base);
  assert.equal(mag.code, 0, mag.stderr);
  assert.deepEqual(JSON.parse(mag.stdout).trackers, ['udp://127.0.0.1:5']);
  const bare = await cli(['info', m.infoHashHex], base);
  assert.equal(bare.code, 0, bare.stderr);
  assert.match(bare.stdout, new RegExp(`magnet:     magnet:\\?xt=urn:btih:${m.infoHashHex}`));

  writeFileSync(join(base, 'bad.torrent'), encode({ info: { name: '..', 'piece length': 16384, length: 1, pieces: Buffer.alloc(20) } }));
  writeFileSync(join(base, 'junk.torrent'), 'not bencode');
  const cases: [string, RegExp][] = [
    ['bad.torrent', /bitorrent info: info\.name: component '\.\.' is not allowed/],
    ['junk.torrent', /bitorrent info: not a valid torrent file/],
    ['nope.torrent', /'nope.torrent': no such file \(and not a magnet link or info-hash\)/],
    ['magnet:?xt=urn:btih:123', /invalid info-hash '123'/],
  ];
  for (const [arg, re] of cases) {
    const x = await cli(['info', arg], base);
    assert.equal(x.code, 1, arg);
    assert.match(x.stderr, re);
    assert.doesNotMatch(x.stderr, /\n\s+at /);
  }
});
