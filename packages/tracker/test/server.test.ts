import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { createSocket } from 'node:dgram';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { decode, asDict, asBytes, decodeCompactPeers } from '@bitorrent/core';
import { startTracker } from '../src/server.js';
import { udpConnect, udpAnnounce, collectUdpReplies } from './udp-packets.js';

const pct = (b: Buffer): string => [...b].map((x) => '%' + x.toString(16).padStart(2, '0')).join('');
const IH = Buffer.alloc(20, 0xcd);
const announce = (port: number, ih = IH, path = '/announce'): string =>
  `${path}?info_hash=${pct(ih)}&peer_id=-BT0001-00000000000${port % 10}&port=${port}&left=1`;

/** Send raw bytes on one TCP connection; resolve with everything received until `until` matches or close. */
function raw(port: number, data: string | Buffer, until: (s: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(data));
    let got = '';
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (until(got)) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(got));
  });
}

function bodies(resp: string): string[] {
  const out: string[] = [];
  let rest = resp;
  while (rest.length) {
    const h = rest.indexOf('\r\n\r\n');
    if (h < 0) break;
    const len = Number(/content-length: (\d+)/i.exec(rest.slice(0, h))![1]);
    out.push(rest.slice(h + 4, h + 4 + len));
    rest = rest.slice(h + 4 + len);
  }
  return out;
}

test('HTTP server: keep-alive pipelining, peers exchanged, malformed input answered, never a crash', async (t) => {
  const srv = await startTracker({ host: '127.0.0.1', httpPort: 0, udpPort: null });
  t.after(() => srv.close());
  const p = srv.httpPort;
  // Two pipelined requests in one write, one response each, same connection.
  const both = `GET ${announce(1001)} HTTP/1.1\r\nHost: x\r\n\r\nGET ${announce(1002)} HTTP/1.1\r\nHost: x\r\n\r\n`;
  const resp = await raw(p, both, (s) => bodies(s).length === 2 && s.endsWith('e'));
  const [, b2] = bodies(resp);
  const d = asDict(decode(Buffer.from(b2, 'latin1')), 'r');
  assert.deepEqual(decodeCompactPeers(asBytes(d.peers, 'peers')), [{ host: '127.0.0.1', port: 1001 }]);
  assert.doesNotMatch(resp, /Connection: close/);
  // Request split across writes.
  const split = await new Promise<string>((resolve) => {
    const s = connect(p, '127.0.0.1', () => {
      s.write(`GET ${announce(1003).slice(0, 20)}`);
      setImmediate(() => s.write(`${announce(1003).slice(20)} HTTP/1.1\r\nHost: x\r\n\r\n`));
    });
    let got = '';
    s.on('data', (x) => {
      got += x.toString('latin1');
      if (bodies(got).length === 1) {
        s.destroy();
        resolve(got);
      }
    });
  });
  assert.match(split, /^HTTP\/1.1 200 OK/);
  // HTTP/1.0 closes; garbage request line gets 400 and a close; oversized header gets 431.
  assert.match(await raw(p, `GET ${announce(1004)} HTTP/1.0\r\n\r\n`, () => false), /Connection: close/);
  assert.match(await raw(p, 'BLAH\r\n\r\n', () => false), /^HTTP\/1.1 400/);
  assert.match(await raw(p, `GET /announce HTTP/1.1\r\nX: ${'a'.repeat(9000)}\r\n\r\n`, () => false), /^HTTP\/1.1 431/);
  assert.match(await raw(p, 'POST /announce HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello', () => false), /^HTTP\/1.1 400/);
  assert.match(await raw(p, 'DELETE /announce HTTP/1.1\r\n\r\n', () => false), /^HTTP\/1.1 405/);
  assert.match(await raw(p, Buffer.from([0, 1, 2, 255, 13, 10, 13, 10]), () => false), /^HTTP\/1.1 400/);
  const fail = await raw(p, `GET /announce?info_hash=zz HTTP/1.1\r\nConnection: close\r\n\r\n`, () => false);
  assert.match(fail, /failure reason/);
  // Still alive and counting.
  const stats = (await fetch(`http://127.0.0.1:${p}/stats.json`).then((r) => r.json())) as { peers: number };
  assert.equal(stats.peers, 4);
  const metrics = await fetch(`http://127.0.0.1:${p}/metrics`).then((r) => r.text());
  assert.match(metrics, /bitorrent_tracker_peers 4/);
});

test('UDP server: connect + announce round trip on loopback, forged ids answered with at most the request size', async (t) => {
  const srv = await startTracker({ host: '127.0.0.1', httpPort: null, udpPort: 0 });
  t.after(() => srv.close());
  const sock = createSocket('udp4');
  t.after(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const rpc = async (b: Buffer): Promise<Buffer> => {
    sock.send(b, srv.udpPort, '127.0.0.1');
    const [m] = (await once(sock, 'message')) as [Buffer];
    return m;
  };
  const cr = await rpc(udpConnect(42));
  assert.equal(cr.length, 16);
  assert.equal(cr.readUInt32BE(4), 42);
  const a = Buffer.alloc(98);
  cr.copy(a, 0, 8, 16);
  a.writeUInt32BE(1, 8);
  IH.copy(a, 16);
  a.writeInt32BE(-1, 92);
  a.writeUInt16BE(7777, 96);
  const ar = await rpc(a);
  assert.equal(ar.readUInt32BE(0), 1);
  assert.equal(ar.readUInt32BE(16), 1);
  // Forged connection id in a short packet: the error would be larger than it, so nothing comes back.
  const forged = Buffer.alloc(20);
  forged.writeUInt32BE(2, 8);
  sock.send(forged, srv.udpPort, '127.0.0.1');
  const sc = Buffer.alloc(36);
  cr.copy(sc, 0, 8, 16);
  sc.writeUInt32BE(2, 8);
  sc.writeUInt32BE(77, 12);
  IH.copy(sc, 16);
  const sr = await rpc(sc);
  assert.equal(sr.readUInt32BE(4), 77, 'the first reply is the scrape: the forged packet got no larger answer');
  assert.ok(srv.tracker.stats.udpErrors + srv.tracker.stats.udpDropped >= 1);
  const big = Buffer.alloc(98);
  big.writeUInt32BE(1, 8);
  big.writeUInt32BE(5, 12);
  const er = await rpc(big);
  assert.equal(er.readUInt32BE(0), 3);
  assert.ok(er.length <= 98);
});

test('flood of random info-hashes over HTTP keeps the store bounded', async (t) => {
  const srv = await startTracker({ host: '127.0.0.1', httpPort: 0, udpPort: null, store: { maxSwarms: 500 } });
  t.after(() => srv.close());
  const reqs: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const ih = Buffer.alloc(20);
    ih.writeUInt32BE(i, 0);
    ih.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, 4);
    reqs.push(`GET ${announce(2000 + (i % 1000), ih)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  }
  const resp = await raw(srv.httpPort, reqs.join(''), (s) => (s.match(/HTTP\/1.1 200/g) ?? []).length === 3000);
  assert.equal((resp.match(/HTTP\/1.1 200/g) ?? []).length, 3000);
  assert.ok(srv.tracker.store.swarms.size <= 500);
  assert.ok(srv.tracker.store.totalPeers <= 500);
  assert.ok(srv.tracker.store.evictedSwarms >= 2500);
});

test('CLI: private mode over HTTP, state saved on SIGTERM and restored on restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bt-tracker-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const allow = join(dir, 'allow.txt');
  const keys = join(dir, 'passkeys.txt');
  const state = join(dir, 'state.bin');
  writeFileSync(allow, `# allowed\n${IH.toString('hex')}\n`);
  writeFileSync(keys, 'alice123 alice\nbob-456\n');
  const bin = fileURLToPath(new URL('../../cli/bin/bitorrent.js', import.meta.url));
  const start = async (): Promise<{ port: number; kill: () => Promise<number | null> }> => {
    const c = spawn(process.execPath, [bin, 'tracker', 'serve', '--host', '127.0.0.1', '--http-port', '0', '--udp-port', '0', '--private', '--allow', allow, '--passkeys', keys, '--state', state], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.after(() => {
      if (c.exitCode === null) c.kill('SIGKILL');
    });
    let buf = '';
    const port = await new Promise<number>((resolve, reject) => {
      c.stdout!.on('data', (d) => {
        buf += d;
        const m = /"http_port":(\d+)/.exec(buf);
        if (m) resolve(Number(m[1]));
      });
      c.once('exit', (code) => reject(new Error(`tracker exited ${code}`)));
    });
    return {
      port,
      kill: async () => {
        c.kill('SIGTERM');
        const [code] = await once(c, 'exit');
        return code as number | null;
      },
    };
  };
  const a = await start();
  const reason = async (url: string): Promise<string | undefined> => {
    const r = await fetch(`http://127.0.0.1:${a.port}${url}`);
    const d = asDict(decode(Buffer.from(await r.arrayBuffer())), 'r');
    return d['failure reason'] ? Buffer.from(asBytes(d['failure reason'], 'f')).toString() : undefined;
  };
  assert.match((await reason(announce(3001)))!, /private/);
  assert.match((await reason(announce(3001, IH, '/mallory/announce')))!, /unknown passkey/);
  assert.match((await reason(announce(3001, Buffer.alloc(20, 1), '/alice123/announce')))!, /not allowed/);
  assert.equal(await reason(announce(3001, IH, '/alice123/announce')), undefined);
  assert.equal(await reason(announce(3002, IH, '/bob-456/announce')), undefined);
  assert.equal(await a.kill(), 0);
  assert.ok(existsSync(state));
  const b = await start();
  const r = (await fetch(`http://127.0.0.1:${b.port}/stats?format=json`).then((x) => x.json())) as { peers: number };
  assert.equal(r.peers, 2);
  assert.equal(await b.kill(), 0);
});

test('CLI --workers 2: shared UDP connection ids, announces replicated across workers, clean SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bt-tracker-cluster-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const state = join(dir, 'state.bin');
  const bin = fileURLToPath(new URL('../../cli/bin/bitorrent.js', import.meta.url));
  const c = spawn(process.execPath, [bin, 'tracker', 'serve', '--host', '127.0.0.1', '--http-port', '0', '--udp-port', '0', '--workers', '2', '--state', state], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (c.exitCode === null) c.kill('SIGKILL');
  });
  let buf = '';
  const ports = await new Promise<{ http_port: number; udp_port: number; workers: number }>((resolve, reject) => {
    c.stdout!.on('data', (d) => {
      buf += d;
      const line = buf.split('\n').find((l) => l.includes('"listening"'));
      if (line) resolve(JSON.parse(line));
    });
    c.once('exit', (code) => reject(new Error(`tracker exited ${code}`)));
  });
  assert.equal(ports.workers, 2);
  // UDP: one connect, then 40 announces from the same source; whichever worker gets each, the id verifies.
  const sock = createSocket('udp4');
  t.after(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const { replies, waitFor } = collectUdpReplies(sock);
  sock.send(udpConnect(1), ports.udp_port, '127.0.0.1');
  await waitFor(1);
  const conn = replies[0].subarray(8, 16);
  for (let i = 0; i < 40; i++) {
    // left 0: a seeder.
    sock.send(udpAnnounce({ conn, tx: 100 + i, infoHash: IH, left: 0n, numwant: 0, port: 5000 + i }), ports.udp_port, '127.0.0.1');
  }
  await waitFor(41);
  assert.deepEqual(
    replies.slice(1).map((r) => r.readUInt32BE(0)),
    new Array(40).fill(1),
    'every announce accepted by whichever worker received it',
  );
  // HTTP leecher on fresh connections (spread over workers): every worker eventually lists all 40 UDP seeders.
  const deadline = Date.now() + 10_000;
  let seen = 0;
  let okInRow = 0;
  while (okInRow < 4 && Date.now() < deadline) {
    const r = await fetch(`http://127.0.0.1:${ports.http_port}${announce(6000)}&numwant=200`, { headers: { connection: 'close' } });
    const d = asDict(decode(Buffer.from(await r.arrayBuffer())), 'r');
    seen = asBytes(d.peers, 'peers').length / 6;
    okInRow = seen === 40 ? okInRow + 1 : 0;
    if (okInRow === 0) await new Promise((r) => setImmediate(r));
  }
  assert.equal(seen, 40);
  c.kill('SIGTERM');
  const [code] = await once(c, 'exit');
  assert.equal(code, 0);
  assert.ok(existsSync(state), 'worker 0 saved the state on SIGTERM');
});
