/**
 * BEP 10 extension hook: the public API for wire extensions (ut_metadata, ut_pex, the Speed token
 * extension and third-party plugins), modeled on libtorrent's peer_plugin and WebTorrent's wire.use().
 *
 * Lifecycle: `wire.use(factory)` before our extended handshake is sent (i.e. before `sendHandshake`
 * on incoming wires, right after construction on outgoing ones). The factory runs at once with the
 * wire; the returned extension is given a local message id (1..n in registration order) which we
 * advertise in our handshake's `m` dictionary. The peer sends us messages under *our* ids; we send
 * to the peer under *its* ids (`wire.sendExtended(name, payload)`).
 */
import type { BencodeDict } from '../bencode.js';
import { encodeIPv4, encodeIPv6 } from '../compact.js';
import { isIPv4, isIPv6 } from 'node:net';
import type { PeerWire } from './peer-wire.js';

export interface WireExtension {
  /** Extension name as it appears in the BEP 10 `m` dictionary, e.g. 'ut_metadata'. */
  readonly name: string;
  /** Add fields (e.g. metadata_size) to our BEP 10 handshake dictionary. */
  extendHandshake?(dict: Record<string, unknown>): void;
  /** The peer's BEP 10 handshake arrived (may be called again if the peer re-sends it). */
  onExtendedHandshake?(dict: BencodeDict): void;
  /**
   * A message for this extension arrived. `payload` is a view into the socket's buffer:
   * copy it if you keep it beyond this call. Throwing here closes the connection with that error.
   */
  onMessage(payload: Buffer): void;
  /** The wire closed. */
  onClose?(): void;
}

export type WireExtensionFactory<E extends WireExtension = WireExtension> = (wire: PeerWire) => E;

/** Compact form of an address for the BEP 10 `yourip` field (4 or 16 bytes), or undefined. */
export function compactAddress(host: string | undefined): Buffer | undefined {
  if (!host) return undefined;
  let h = host;
  if (h.startsWith('::ffff:') && isIPv4(h.slice(7))) h = h.slice(7);
  try {
    if (isIPv4(h)) {
      const b = Buffer.alloc(4);
      encodeIPv4(h, b, 0);
      return b;
    }
    if (isIPv6(h.replace(/%.*$/, ''))) {
      const b = Buffer.alloc(16);
      encodeIPv6(h, b, 0);
      return b;
    }
  } catch {
    return undefined;
  }
  return undefined;
}
