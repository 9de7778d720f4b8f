/**
 * MSE/PE: our initiator against our responder over real loopback sockets (RC4 and plaintext selection, data
 * both ways after the handshake), the responder recognising the torrent from HASH('req2'), and hostile input
 * (garbage, unknown torrent, no common method) failing with a clear MseError within bounded reads.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createServer, createConnection, type Socket } from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Session, createTorrent } from '../src/index.js';
import { Rc4, Rc4Stream, mseInitiate, mseRespond, mseTorrentKey, isPlaintextHandshake, MseError, CRYPTO_PLAINTEXT, CRYPTO_RC4, type EncryptionPolicy } from '../src/wire/mse.js';

async function tcpPair(t: TestContext): Promise<[Socket, Socket]> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = once(server, 'connection');
  const client = createConnection({ host: '127.0.0.1', port: (server.address() as { port: number }).port });
  await once(client, 'connect');
  const [srv] = (await accepted) as [Socket];
  t.after(() => {
    client.destroy();
    srv.destroy();
    server.close();
  });
  return [client, srv];
}

async function readN(stream: NodeJS.ReadableStream, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    parts.push(chunk);
    got += chunk.length;
    if (got >= n) break;
  }
  return Buffer.concat(parts).subarray(0, n);
}

test('RC4 drops 1024 keystream bytes and is its own inverse', () => {
  const key = Buffer.from('0123456789abcdef0123');
  const data = randomBytes(70_000);
  const enc = new Rc4(key).update(data);
  assert.notDeepEqual(enc, data);
  assert.deepEqual(new Rc4(key).update(enc), data);
  // Known answer (no drop): RC4 with key 'Key' turns 'Plaintext' into bbf316e8d940af0ad3.
  assert.equal(new Rc4(Buffer.from('Key'), 0).update(Buffer.from('Plaintext')).toString('hex'), 'bbf316e8d940af0ad3');
  // MSE's drop: the same as discarding 1024 bytes of keystream by hand.
  const manual = new Rc4(key, 0);
  manual.update(Buffer.alloc(1024));
  assert.deepEqual(manual.update(data.subarray(0, 100)), enc.subarray(0, 100));
});

/** RC4 a byte at a time, straight from the definition: the reference for Rc4's 32-bit word path. */
function referenceRc4(key: Uint8Array, data: Uint8Array, drop: number): Buffer {
  const s = Array.from({ length: 256 }, (_, i) => i);
  for (let i = 0, j = 0; i < 256; i++) {
    j = (j + s[i] + key[i % key.length]) & 0xff;
    [s[i], s[j]] = [s[j], s[i]];
  }
  const out = Buffer.alloc(data.length);
  for (let n = -drop, i = 0, j = 0; n < data.length; n++) {
    i = (i + 1) & 0xff;
    j = (j + s[i]) & 0xff;
    [s[i], s[j]] = [s[j], s[i]];
    if (n >= 0) out[n] = data[n] ^ s[(s[i] + s[j]) & 0xff];
  }
  return out;
}

test('property: RC4 over any split of the stream, at any buffer alignment, in place or not, equals the byte-at-a-time definition', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 1, maxLength: 32 }),
      fc.uint8Array({ maxLength: 2000 }),
      fc.array(fc.nat(2000), { maxLength: 6 }),
      fc.nat(7),
      fc.boolean(),
      (key, data, cuts, shift, inPlace) => {
        const rc4 = new Rc4(key);
        const bounds = [...new Set([0, ...cuts.map((c) => c % (data.length + 1)), data.length])].sort((a, b) => a - b);
        const got: Buffer[] = [];
        for (let b = 0; b + 1 < bounds.length; b++) {
          // Copy the piece at `shift` bytes into a larger buffer, so views start at every alignment.
          const len = bounds[b + 1] - bounds[b];
          const backing = Buffer.alloc(len + 8);
          const view = backing.subarray(shift, shift + len);
          Buffer.from(data.subarray(bounds[b], bounds[b + 1])).copy(view);
          got.push(Buffer.from(inPlace ? rc4.update(view, view) : rc4.update(view)));
        }
        assert.deepEqual(Buffer.concat(got), referenceRc4(key, data, 1024));
      },
    ),
    { numRuns: 300 },
  );
});

for (const [name, provide, allow, expected] of [
  ['RC4 when the responder allows only RC4', CRYPTO_PLAINTEXT | CRYPTO_RC4, CRYPTO_RC4, CRYPTO_RC4],
  ['plaintext when both offer it', CRYPTO_PLAINTEXT | CRYPTO_RC4, CRYPTO_PLAINTEXT | CRYPTO_RC4, CRYPTO_PLAINTEXT],
  ['RC4 when the initiator offers only RC4', CRYPTO_RC4, CRYPTO_PLAINTEXT | CRYPTO_RC4, CRYPTO_RC4],
] as const) {
  test(`handshake selects ${name}; 1 MiB flows both ways intact`, async (t) => {
    const [a, b] = await tcpPair(t);
    const infoHash = randomBytes(20);
    const other = randomBytes(20);
    const keys = new Map([mseTorrentKey(other), mseTorrentKey(infoHash)].map((k, i) => [k, i === 0 ? other : infoHash]));
    const initiated = mseInitiate(a, infoHash, { provide });
    const first = (await once(b, 'data'))[0] as Buffer;
    assert.equal(isPlaintextHandshake(first), false);
    const [ra, rb] = await Promise.all([initiated, mseRespond(b, first, { allow, lookup: (k) => keys.get(k) })]);
    assert.equal(ra.method, expected);
    assert.equal(rb.method, expected);
    assert.deepEqual(rb.infoHash, infoHash);
    const up = randomBytes(1 << 20);
    const down = randomBytes(300_000);
    const gotUp = readN(rb.stream, up.length);
    const gotDown = readN(ra.stream, down.length);
    ra.stream.write(up.subarray(0, 1000));
    ra.stream.cork();
    ra.stream.write(up.subarray(1000, 5000));
    ra.stream.write(up.subarray(5000));
    ra.stream.uncork();
    rb.stream.write(down);
    assert.deepEqual(await gotUp, up);
    assert.deepEqual(await gotDown, down);
  });
}

test('Rc4Stream.readDirect: bytes already buffered come first as data, later reads reach the sink decrypted and in order; pause() stops them', async (t) => {
  const [a, b] = await tcpPair(t);
  const infoHash = randomBytes(20);
  const initiated = mseInitiate(a, infoHash, { provide: CRYPTO_RC4 });
  const first = (await once(b, 'data'))[0] as Buffer;
  const [ra, rb] = await Promise.all([initiated, mseRespond(b, first, { allow: CRYPTO_RC4, lookup: () => infoHash })]);
  assert.ok(rb.stream instanceof Rc4Stream);
  const sent = randomBytes(3 << 20);
  // 300 kB before the reader switches: they wait in the cipher stream and the socket (both paused).
  rb.stream.pause();
  b.pause();
  await new Promise<void>((resolve, reject) => ra.stream.write(sent.subarray(0, 300_000), (e) => (e ? reject(e) : resolve())));
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  const got: Buffer[] = [];
  rb.stream.on('data', (c: Buffer) => got.push(Buffer.from(c)));
  let sinkCalls = 0;
  const switched = (rb.stream as Rc4Stream).readDirect((chunk) => {
    sinkCalls++;
    got.push(Buffer.from(chunk)); // the buffer is reused: copy
  });
  assert.equal(switched, true);
  rb.stream.resume();
  const total = () => got.reduce((n, c) => n + c.length, 0);
  const until = (n: number) =>
    new Promise<void>((resolve) => {
      const check = (): void => (total() >= n ? resolve() : void setImmediate(check));
      check();
    });
  ra.stream.write(sent.subarray(300_000, 1_000_000));
  await until(1_000_000);
  // Paused: a write the kernel has taken is not read.
  rb.stream.pause();
  const before = got.length;
  await new Promise<void>((resolve, reject) => ra.stream.write(sent.subarray(1_000_000, 1_100_000), (e) => (e ? reject(e) : resolve())));
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.equal(got.length, before, 'no reads while paused');
  rb.stream.resume();
  ra.stream.write(sent.subarray(1_100_000));
  await until(sent.length);
  assert.ok(Buffer.concat(got).equals(sent));
  assert.ok(sinkCalls > 0, 'later reads went to the sink');
});

test('responder: unknown torrent, no common method, garbage and a silent peer fail with MseError', async (t) => {
  {
    const [a, b] = await tcpPair(t);
    const ini = mseInitiate(a, randomBytes(20), { provide: CRYPTO_RC4, timeoutMs: 2000 });
    const first = (await once(b, 'data'))[0] as Buffer;
    const res = mseRespond(b, first, { allow: CRYPTO_RC4, lookup: () => undefined });
    await assert.rejects(res, (e: Error) => e instanceof MseError && /do not have/.test(e.message));
    b.destroy();
    await assert.rejects(ini, MseError);
  }
  {
    const [a, b] = await tcpPair(t);
    const ih = randomBytes(20);
    const ini = mseInitiate(a, ih, { provide: CRYPTO_PLAINTEXT, timeoutMs: 2000 });
    const first = (await once(b, 'data'))[0] as Buffer;
    const res = mseRespond(b, first, { allow: CRYPTO_RC4, lookup: () => ih });
    await assert.rejects(res, /no common encryption method/);
    b.destroy();
    await assert.rejects(ini, MseError);
  }
  {
    // 2 KiB of garbage: no req1 marker within the padding window.
    const [a, b] = await tcpPair(t);
    a.write(randomBytes(2048));
    const first = (await once(b, 'data'))[0] as Buffer;
    await assert.rejects(mseRespond(b, first, { allow: CRYPTO_RC4, lookup: () => undefined }), /no synchronisation marker/);
  }
  {
    const [a, b] = await tcpPair(t);
    a.write(randomBytes(10));
    const first = (await once(b, 'data'))[0] as Buffer;
    await assert.rejects(mseRespond(b, first, { allow: CRYPTO_RC4, lookup: () => undefined, timeoutMs: 200 }), /timed out/);
  }
});

async function seedAndLeech(t: TestContext, seedPolicy: EncryptionPolicy, leechPolicy: EncryptionPolicy, timeoutMs = 20_000): Promise<boolean> {
  const dir = await mkdtemp(join(tmpdir(), 'bt-mse-'));
  const data = randomBytes(300_000);
  await writeFile(join(dir, 'f.bin'), data);
  const { torrent } = await createTorrent({ path: join(dir, 'f.bin'), pieceLength: 32768 });
  const seeder = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1, encryption: seedPolicy });
  const leecher = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1, encryption: leechPolicy });
  t.after(async () => {
    await leecher.close();
    await seeder.close();
    await rm(dir, { recursive: true, force: true });
  });
  await seeder.listen();
  await leecher.listen();
  const st = await seeder.add({ torrent, path: dir, seed: true });
  await st.done;
  const lt = await leecher.add({ torrent, path: join(dir, 'dl'), peers: [{ host: '127.0.0.1', port: seeder.port }] });
  let timer: NodeJS.Timeout | undefined;
  const finished = await Promise.race([lt.done.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)))]);
  clearTimeout(timer);
  if (finished) assert.deepEqual(await readFile(join(dir, 'dl', 'f.bin')), data);
  return finished;
}

test('sessions: required ↔ required transfers over RC4', async (t) => {
  assert.equal(await seedAndLeech(t, 'required', 'required'), true);
});

test('sessions: a plaintext-first dialler (enabled) retries encrypted when the seeder requires it', async (t) => {
  assert.equal(await seedAndLeech(t, 'required', 'enabled'), true);
});

test('sessions: prefer ↔ disabled falls back to plaintext', async (t) => {
  assert.equal(await seedAndLeech(t, 'disabled', 'prefer'), true);
});

test('sessions: disabled cannot reach a seeder that requires encryption', async (t) => {
  assert.equal(await seedAndLeech(t, 'required', 'disabled', 3000), false);
});
