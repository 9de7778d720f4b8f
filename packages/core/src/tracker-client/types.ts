import type { PeerAddress } from '../compact.js';

export type AnnounceEvent = 'started' | 'completed' | 'stopped';

export interface AnnounceParams {
  /** 20-byte info-hash (v1, or v2 truncated to 20 bytes per BEP 52). */
  infoHash: Buffer;
  /** 20-byte peer id. */
  peerId: Buffer;
  port: number;
  uploaded: number;
  downloaded: number;
  left: number;
  event?: AnnounceEvent;
  /** Peers wanted; default 50 (HTTP) / -1 = tracker default (UDP). */
  numwant?: number;
  /** 32-bit key identifying this client across IP changes. */
  key?: number;
  /** `tracker id` from a previous HTTP response. */
  trackerId?: string;
  /** HTTP only: ask for compact peers (default true). */
  compact?: boolean;
  /** HTTP only: our IPv6 address to report (BEP 7 `ipv6=`). */
  ipv6?: string;
}

export interface AnnounceResponse {
  /** Seconds until the next regular announce. */
  interval: number;
  minInterval?: number;
  peers: PeerAddress[];
  /** Seeders. */
  complete?: number;
  /** Leechers. */
  incomplete?: number;
  trackerId?: string;
  warning?: string;
}

export interface ScrapeResult {
  infoHash: Buffer;
  complete: number;
  incomplete: number;
  downloaded: number;
}

export interface TrackerRequestOptions {
  /** Overall deadline in ms (HTTP default 15000). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class TrackerError extends Error {
  constructor(
    message: string,
    /** The tracker URL (set when known). */
    readonly url?: string,
    /** The tracker itself said so (`failure reason` / UDP error): retrying soon will not help. */
    readonly fromTracker = false,
  ) {
    super(url ? `tracker ${url}: ${message}` : message);
    this.name = 'TrackerError';
  }
}

export function checkAnnounceParams(p: AnnounceParams): void {
  if (!Buffer.isBuffer(p.infoHash) || p.infoHash.length !== 20) throw new TrackerError('info_hash must be 20 bytes');
  if (!Buffer.isBuffer(p.peerId) || p.peerId.length !== 20) throw new TrackerError('peer_id must be 20 bytes');
  if (!Number.isInteger(p.port) || p.port < 0 || p.port > 65535) throw new TrackerError(`invalid port ${p.port}`);
  for (const k of ['uploaded', 'downloaded', 'left'] as const) {
    const v = p[k];
    if (!Number.isSafeInteger(v) || v < 0) throw new TrackerError(`${k} must be a non-negative integer, got ${v}`);
  }
}
