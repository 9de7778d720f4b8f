/**
 * Reading a peer socket into one buffer of our own, reused for every read.
 *
 * Node's default gives every read a fresh 64 KiB buffer. At download speed that is about 1 GiB of short-lived
 * external memory per GiB received, and the old-generation collections it sets off cost more CPU than parsing the
 * stream. One process downloading 512 MiB over loopback through an incoming connection ran 28–30 such collections
 * and used 44% more CPU (both peers together) than through an outgoing connection reading into its own buffer
 * (2–3 collections).
 *
 * `net.connect({ onread })` does this for outgoing sockets. `net.Server` has no such option for the sockets it
 * accepts.
 */
import type { Socket } from 'node:net';

/** Bytes per socket read: libuv's own default. */
export const SOCKET_READ_BUFFER = 64 * 1024;

interface UserBufferHandle {
  useUserBuffer(buf: Uint8Array): void;
}

/**
 * Switch a socket (one a server accepted, or one connected without `onread`) to read into `buffer`, handing each read
 * to `onRead(bytes, buffer)` instead of emitting 'data'. It uses the same two steps `net.Socket` takes for its `onread`
 * option: the socket's private kBuffer and kBufferCb slots, and its handle's `useUserBuffer`. After the switch,
 * `pause()`/`resume()` stop and restart the handle's reads, as they do for `onread` sockets.
 *
 * Those internals are found by feature detection. When they are not there (another Node version), it changes nothing
 * and returns false; the caller then reads through 'data' as before. Emptying what the socket has already buffered
 * (`socket.read()`) is the caller's job, before the switch and in the same tick: later reads bypass that buffer
 * (switchToOwnBuffer does both).
 */
export function readIntoOwnBuffer(socket: Socket, buffer: Buffer, onRead: (bytes: number, buf: Buffer) => boolean): boolean {
  const handle = (socket as unknown as { _handle?: Partial<UserBufferHandle> | null })._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') return false;
  let kBuffer: symbol | undefined, kBufferCb: symbol | undefined;
  for (const s of Object.getOwnPropertySymbols(socket)) {
    if (s.description === 'kBuffer') kBuffer = s;
    else if (s.description === 'kBufferCb') kBufferCb = s;
  }
  const slots = socket as unknown as Record<symbol, unknown>;
  // Both slots exist and are empty on a socket that reads the default way (the constructor sets them to null).
  if (kBuffer === undefined || kBufferCb === undefined || slots[kBuffer] !== null || slots[kBufferCb] !== null) return false;
  handle.useUserBuffer(buffer);
  slots[kBuffer] = buffer;
  slots[kBufferCb] = (bytes: number, buf: Buffer): boolean => onRead(bytes, buf);
  return true;
}

/**
 * readIntoOwnBuffer for a paused socket that may already hold bytes (sniffed past, or left over from a handshake):
 * takes them, in order, then switches. The caller must hand the returned chunks to the same consumer as `onRead`
 * before it returns to the event loop (no read can reach `onRead` before then). Undefined, with the bytes put back
 * and nothing changed, when the socket cannot read into our buffer.
 */
export function switchToOwnBuffer(socket: Socket, onRead: (bytes: number, buf: Buffer) => boolean): Buffer[] | undefined {
  const held: Buffer[] = [];
  for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) held.push(c);
  if (readIntoOwnBuffer(socket, Buffer.allocUnsafe(SOCKET_READ_BUFFER), onRead)) return held;
  for (let i = held.length - 1; i >= 0; i--) socket.unshift(held[i]);
  return undefined;
}
