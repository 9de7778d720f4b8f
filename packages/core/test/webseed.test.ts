/**
 * BEP 19 web seeds against a real HTTP server on loopback (node:http with Range support): a multi-file torrent
 * downloads from the web seed alone, byte for byte; a seed serving corrupt data is dropped after two hash
 * failures while a real peer completes the download; a seed answering 404 is retried, then dropped; URLs are
 * built as BEP 19 says (folder URLs, percent-encoding); web seed bytes count against the download rate limit.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtemp, mkdir, writeFile, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { Session, VirtualClock, createTorrent, parseTorrent, webSeedFileUrl, pieceRanges } from '../src/index.js';
import { bytes } from './fixtures.js';

const FILES: [string, number][] = [
  ['a b.bin', 150_000],
  ['sub/c.bin', 70_001],
  ['sub/d.bin', 200_000],
];

/** Serves `root` over HTTP with single-range support; `mutate` may corrupt a response; counts requests. */
async function httpServer(t: TestContext, root: string, opts: { corrupt?: boolean; status?: number } = {}): Promise<{ url: string; requests: () => number }> {
  let requests = 0;
  const server: Server = createServer(async (req, res) => {
    requests++;
    if (opts.status) {
      res.writeHead(opts.status).end();
      return;
    }
    const path = join(root, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch {
      res.writeHead(404).end();
      return;
    }
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) {
      res.writeHead(200, { 'content-length': data.length }).end(data);
      return;
    }
    let body = Buffer.from(data.subarray(Number(m[1]), Number(m[2]) + 1));
    if (opts.corrupt) body[0] ^= 0xff;
    res.writeHead(206, { 'content-length': body.length, 'content-range': `bytes ${m[1]}-${m[2]}/${data.length}` }).end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/`, requests: () => requests };
}

async function payload(t: TestContext): Promise<{ dir: string; root: string; data: Map<string, Buffer> }> {
  const dir = await mkdtemp(join(tmpdir(), 'bt-webseed-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'www');
  const data = new Map<string, Buffer>();
  for (const [i, [name, size]] of FILES.entries()) {
    const b = bytes(size, i + 1);
    data.set(name, b);
    await mkdir(join(root, 'pay load', name, '..'), { recursive: true });
    await writeFile(join(root, 'pay load', name), b);
  }
  return { dir, root, data };
}

async function leecher(t: TestContext): Promise<Session> {
  const s = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1 });
  t.after(() => s.close());
  await s.listen();
  return s;
}

async function assertSame(data: Map<string, Buffer>, dir: string): Promise<void> {
  for (const [name, b] of data) assert.ok((await readFile(join(dir, 'pay load', name))).equals(b), name);
}

test('BEP 19 URLs: single file, folder URL, multi-file with percent-encoding; pieces split across files', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'bt-wsurl-'));
  try {
    await writeFile(join(tmp, 'x y.iso'), bytes(40_000, 5));
    const one = parseTorrent((await createTorrent({ path: join(tmp, 'x y.iso'), pieceLength: 16384 })).torrent);
    assert.equal(webSeedFileUrl('http://h/files/', one, 0), 'http://h/files/x%20y.iso');
    assert.equal(webSeedFileUrl('http://h/exact.iso', one, 0), 'http://h/exact.iso');
    await mkdir(join(tmp, 'm', 'sub'), { recursive: true });
    await writeFile(join(tmp, 'm', 'a#1.bin'), bytes(20_000, 6));
    await writeFile(join(tmp, 'm', 'sub', 'b.bin'), bytes(20_000, 7));
    const multi = parseTorrent((await createTorrent({ path: join(tmp, 'm'), pieceLength: 16384 })).torrent);
    const urls = multi.files.map((_, i) => webSeedFileUrl('http://h/d', multi, i));
    assert.deepEqual(urls.sort(), ['http://h/d/m/a%231.bin', 'http://h/d/m/sub/b.bin']);
    // Piece 1 spans [16384, 32768): the end of the first file and the start of the second.
    const ranges = pieceRanges('http://h/d/', multi, 1);
    assert.equal(ranges.length, 2);
    assert.deepEqual(ranges.map((r) => r.length), [20_000 - 16384, 32768 - 20_000]);
    assert.deepEqual(ranges.map((r) => r.start), [16384, 0]);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test('a multi-file torrent downloads from a web seed alone, byte for byte', async (t) => {
  const { dir, root, data } = await payload(t);
  const http = await httpServer(t, root);
  const { torrent } = await createTorrent({ path: join(root, 'pay load'), pieceLength: 32768, webSeeds: [http.url] });
  const s = await leecher(t);
  const tor = await s.add({ torrent, path: join(dir, 'dl'), seed: false });
  await tor.done;
  await assertSame(data, join(dir, 'dl'));
  assert.equal(tor.stats().hashFailures, 0);
  assert.ok(http.requests() >= parseTorrent(torrent).pieceCount, 'one or more range requests per piece');
});

test('a corrupt web seed is dropped after two hash failures; a real peer completes the download', async (t) => {
  const { dir, root, data } = await payload(t);
  const bad = await httpServer(t, root, { corrupt: true });
  const { torrent } = await createTorrent({ path: join(root, 'pay load'), pieceLength: 32768, webSeeds: [bad.url] });
  const seeder = await leecher(t);
  const st = await seeder.add({ torrent, path: root, seed: true, webSeeds: false });
  await st.done;
  const s = await leecher(t);
  const logs: string[] = [];
  (s as unknown as { opts: { log?: (m: string) => void } }).opts.log = (m) => logs.push(m);
  const tor = await s.add({ torrent, path: join(dir, 'dl'), seed: false, peers: [{ host: '127.0.0.1', port: seeder.port }] });
  await tor.done;
  await assertSame(data, join(dir, 'dl'));
  const failures = tor.stats().hashFailures;
  assert.ok(failures >= 1 && failures <= 2, `hash failures from the web seed: ${failures}`);
});

test('a web seed answering 404 backs off (2, 4, 8, 16 s), is dropped after 5 failures, and the torrent carries on', async (t) => {
  const { dir, root } = await payload(t);
  const missing = await httpServer(t, root, { status: 404 });
  const { torrent } = await createTorrent({ path: join(root, 'pay load'), pieceLength: 32768, webSeeds: [missing.url] });
  const clock = new VirtualClock(1_000_000);
  const logs: string[] = [];
  let onLog: (() => void) | undefined;
  const s = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1, clock, log: (m) => (logs.push(m), onLog?.()) });
  t.after(() => s.close());
  await s.listen();
  const nextLog = (): Promise<void> => new Promise((r) => (onLog = () => setImmediate(r)));
  let logged = nextLog();
  const tor = await s.add({ torrent, path: join(dir, 'dl'), seed: false });
  const backoffs = [2000, 4000, 8000, 16000];
  for (const [i, ms] of backoffs.entries()) {
    await logged; // failure i+1 reported; its backoff timer is set
    assert.equal(missing.requests(), i + 1);
    logged = nextLog();
    clock.advance(ms - 1);
    assert.equal(missing.requests(), i + 1, 'no retry before the backoff ends');
    clock.advance(1);
  }
  await logged;
  assert.equal(missing.requests(), 5);
  assert.match(logs.at(-1) ?? '', /web seed .* dropped: 5 failed requests in a row, last: .*HTTP 404/);
  const internals = tor as unknown as { webSeeds: { disabled: boolean }[] };
  assert.equal(internals.webSeeds[0].disabled, true);
  clock.advance(120_000);
  assert.equal(missing.requests(), 5, 'a dropped seed is not asked again');
  assert.equal(tor.stats().state, 'downloading');
});

test('web seed downloads count against the download rate limit (virtual clock)', async (t) => {
  const { dir, root, data } = await payload(t);
  const http = await httpServer(t, root);
  const pieceLength = 32768;
  const { torrent } = await createTorrent({ path: join(root, 'pay load'), pieceLength, webSeeds: [http.url] });
  const clock = new VirtualClock(1_000_000);
  const rate = 65536; // bytes/s; the bucket's burst is one second of it: two pieces
  const s = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1, clock, downloadRateLimit: rate });
  t.after(() => s.close());
  await s.listen();
  const tor = await s.add({ torrent, path: join(dir, 'dl'), seed: false });
  let finished = false;
  void tor.done.then(() => (finished = true));
  /** Until the web seed waits on the limit (or the download is over); bounded. */
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 2000 && !finished && s.globalDownload.waiting === 0; i++) await new Promise((r) => setTimeout(r, 2));
    assert.ok(finished || s.globalDownload.waiting > 0, 'the web seed neither finished nor waited for the limit');
  };
  await settle();
  const first = tor.stats().downloaded;
  assert.ok(first <= rate && first > rate - 2 * pieceLength, `the burst (two pieces) and no more, then the seed waits: ${first} bytes`);
  let elapsedMs = 0;
  for (let i = 0; i < 200 && !finished; i++) {
    clock.advance(100);
    elapsedMs += 100;
    await settle();
    const allowed = rate + (rate * elapsedMs) / 1000 + pieceLength; // burst + refill + one piece charged ahead
    assert.ok(tor.stats().downloaded <= allowed, `downloaded ${tor.stats().downloaded} bytes by ${elapsedMs} ms (the limit allows ${allowed})`);
  }
  await tor.done;
  await assertSame(data, join(dir, 'dl'));
  const total = [...data.values()].reduce((n, b) => n + b.length, 0);
  assert.ok(elapsedMs >= ((total - rate - pieceLength) * 1000) / rate, `${total} bytes in ${elapsedMs} virtual ms at ${rate} B/s`);
});
