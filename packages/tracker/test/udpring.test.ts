import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { readdirSync } from 'node:fs';
import { setImmediate as tick } from 'node:timers/promises';
import { UdpSendThread } from '../src/udpring.js';
import { startTracker } from '../src/server.js';
import { udpConnect, udpAnnounce, collectUdpReplies } from './udp-packets.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;

function bound(): Promise<Socket> {
  const s = createSocket('udp4');
  return new Promise((r) => s.bind(0, '127.0.0.1', () => r(s)));
}

test('UdpSendThread: every payload arrives intact, from the shared socket, through a small wrapping ring', async (t) => {
  const sender = await bound();
  const rx = await bound();
  const got: Buffer[] = [];
  const from = new Set<number>();
  let want = 0;
  let wake: (() => void) | null = null;
  rx.on('message', (m, r) => {
    got.push(m);
    from.add(r.port);
    if (got.length >= want && wake) wake();
  });
  const th = UdpSendThread.start(sender, 'udp4', (m) => assert.fail(m), 4096);
  assert.ok(th, 'the socket fd is reachable on this Node');
  t.after(async () => {
    th!.stop();
    sender.close();
    rx.close();
    await th!.exited;
  });
  const rxPort = rx.address().port;
  // Sizes that do not divide the ring, so records hit the end and wrap; bursts larger than the ring, so push()
  // reports "full" and the test waits for the thread to catch up.
  const N = 600;
  let full = 0;
  for (let i = 0; i < N; i++) {
    const p = Buffer.alloc(17 + ((i * 37) % 300), i & 0xff);
    p.writeUInt32BE(i, 0);
    while (!th!.push(p, rxPort, '127.0.0.1')) {
      full++;
      await tick();
    }
    if (i % 50 === 49) {
      want = i + 1;
      if (got.length < want) await new Promise<void>((r) => (wake = r));
    }
  }
  assert.ok(full > 0, 'the 4 KiB ring filled up at least once');
  assert.equal(got.length, N);
  assert.deepEqual([...from], [sender.address().port], 'replies leave from the shared socket');
  const seen = new Set<number>();
  for (const m of got) {
    const i = m.readUInt32BE(0);
    assert.equal(m.length, 17 + ((i * 37) % 300));
    for (let k = 4; k < m.length; k++) assert.equal(m[k], i & 0xff);
    seen.add(i);
  }
  assert.equal(seen.size, N);
});

test('tracker with udpSendThread: announces answered, peers exchanged, close releases the fd and the port', async () => {
  const fds = openFds();
  const srv = await startTracker({ host: '127.0.0.1', httpPort: null, udpPort: 0, udpSendThread: true });
  const port = srv.udpPort;
  const cl = await bound();
  cl.on('message', (_m, r) => assert.equal(r.port, port, 'replies come from the tracker port'));
  const { replies, waitFor } = collectUdpReplies(cl);
  const byTx = (tx: number) => replies.find((m) => m.readUInt32BE(4) === tx);
  cl.send(udpConnect(1), port, '127.0.0.1');
  await waitFor(1);
  const conn = byTx(1)!.subarray(8, 16);
  const infoHash = Buffer.alloc(20, 0x5a);
  // 300 distinct peers (ports) announce as leechers, in bursts of 50 (a whole-suite run on 2 cores can overflow a
  // socket buffer with one burst of 300); every one is answered.
  for (let b = 0; b < 300; b += 50) {
    for (let i = b; i < b + 50; i++) cl.send(udpAnnounce({ conn, tx: 1000 + i, infoHash, left: 1000n, numwant: 50, port: 20000 + i }), port, '127.0.0.1');
    await waitFor(1 + b + 50);
  }
  const last = byTx(1299)!;
  assert.equal(last.readUInt32BE(0), 1);
  const peers = (last.length - 20) / 6;
  assert.ok(peers > 0 && peers <= 50 && Number.isInteger(peers));
  for (let k = 0; k < peers; k++) {
    assert.equal(last.readUInt32BE(20 + k * 6), 0x7f000001);
    const p = last.readUInt16BE(24 + k * 6);
    assert.ok(p >= 20000 && p < 20300 && p !== 20299, 'other peers of the swarm, never the announcer');
  }
  assert.equal(srv.tracker.stats.udpAnnounces, 300);
  await srv.close();
  cl.close();
  // The send thread closed the shared fd, the main handle's second close was harmless, nothing leaked.
  assert.equal(openFds(), fds);
  const again = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    again.once('error', reject);
    again.bind(port, '127.0.0.1', () => resolve());
  });
  again.close();
});

test('CLI: --udp-send-thread on|off (default off), anything else is refused', async () => {
  const { parseServeArgs } = await import('../src/cli.js');
  assert.equal(parseServeArgs([]).udpSendThread, false);
  assert.equal(parseServeArgs(['--udp-send-thread', 'off']).udpSendThread, false);
  assert.equal(parseServeArgs(['--udp-send-thread', 'on']).udpSendThread, true);
  assert.throws(() => parseServeArgs(['--udp-send-thread', 'yes']), /must be 'on' or 'off'/);
});
