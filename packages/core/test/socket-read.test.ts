import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { readIntoOwnBuffer } from '../src/wire/socket-read.js';
import { bytes } from './fixtures.js';

/** A loopback pair: the accepted socket (paused, as Session gets it after sniffing) and the client. */
async function pair(t: import('node:test').TestContext): Promise<{ accepted: Socket; client: Socket }> {
  const server = createServer({ pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const client = connect(port, '127.0.0.1');
  const [accepted] = (await once(server, 'connection')) as [Socket];
  t.after(() => {
    client.destroy();
    accepted.destroy();
    server.close();
  });
  return { accepted, client };
}

test('readIntoOwnBuffer: an accepted socket reads into our one buffer, in order, with no data events; pause() stops the reads', async (t) => {
  const { accepted, client } = await pair(t);
  const payload = bytes(3 * 1024 * 1024, 7);
  const own = Buffer.alloc(64 * 1024);
  const got: Buffer[] = [];
  const buffersSeen = new Set<Buffer>();
  let dataEvents = 0;
  accepted.on('data', () => dataEvents++);
  const switched = readIntoOwnBuffer(accepted, own, (n, buf) => {
    buffersSeen.add(buf);
    got.push(Buffer.from(buf.subarray(0, n))); // the buffer is reused: copy
    return true;
  });
  assert.equal(switched, true, 'Node 20 has the internals this uses');
  accepted.resume();
  client.write(payload.subarray(0, 1024 * 1024));
  // Paused: nothing more arrives through the callback until resume().
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (got.reduce((s, b) => s + b.length, 0) >= 1024 * 1024) resolve();
      else setImmediate(check);
    };
    check();
  });
  accepted.pause();
  const before = got.length;
  // Once the write callback has run the bytes are in the kernel: a socket still reading would get them within the
  // next turns of the event loop.
  await new Promise<void>((resolve, reject) => client.write(payload.subarray(1024 * 1024, 1536 * 1024), (err) => (err ? reject(err) : resolve())));
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.equal(got.length, before, 'no reads while paused');
  client.write(payload.subarray(1536 * 1024));
  accepted.resume();
  client.end();
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (got.reduce((s, b) => s + b.length, 0) >= payload.length) resolve();
      else setImmediate(check);
    };
    check();
  });
  assert.ok(Buffer.concat(got).equals(payload));
  assert.deepEqual([...buffersSeen], [own]);
  assert.equal(dataEvents, 0);
});

test('readIntoOwnBuffer: a socket already reading into a buffer of its own is left alone', async (t) => {
  const { accepted } = await pair(t);
  assert.equal(readIntoOwnBuffer(accepted, Buffer.alloc(1024), () => true), true);
  assert.equal(readIntoOwnBuffer(accepted, Buffer.alloc(1024), () => true), false);
});
