/**
 * Ed25519 keys: sodium-native (libsodium) when it loads, node:crypto otherwise. Both are RFC 8032 deterministic,
 * so signatures are byte-identical. Public keys are 32 raw bytes; secret keys are libsodium's 64 bytes (seed ‖ public key).
 */
import { createRequire } from 'node:module';
import { createPrivateKey, createPublicKey, sign as cSign, verify as cVerify, randomBytes, type KeyObject } from 'node:crypto';

export interface KeyPair {
  publicKey: Buffer;
  secretKey: Buffer;
}

interface Sodium {
  crypto_sign_seed_keypair(pk: Buffer, sk: Buffer, seed: Buffer): void;
  crypto_sign_detached(sig: Buffer, m: Buffer, sk: Buffer): void;
  crypto_sign_verify_detached(sig: Buffer, m: Buffer, pk: Buffer): boolean;
}

let sodium: Sodium | null = null;
if (!process.env.BITORRENT_NO_SODIUM) {
  try {
    sodium = createRequire(import.meta.url)('sodium-native') as Sodium;
  } catch {
    sodium = null;
  }
}

/** Which backend is in use ('sodium-native' or 'node:crypto'). */
export const cryptoBackend: 'sodium-native' | 'node:crypto' = sodium ? 'sodium-native' : 'node:crypto';

const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function nodePrivate(secretKey: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, secretKey.subarray(0, 32)]), format: 'der', type: 'pkcs8' });
}
const pubCache = new Map<string, KeyObject>();
function nodePublic(publicKey: Buffer): KeyObject {
  const k = publicKey.toString('latin1');
  let o = pubCache.get(k);
  if (!o) {
    o = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    if (pubCache.size > 10_000) pubCache.clear();
    pubCache.set(k, o);
  }
  return o;
}

/** Derive a key pair from a 32-byte seed. */
export function keyPairFromSeed(seed: Buffer): KeyPair {
  if (seed.length !== 32) throw new RangeError('seed must be 32 bytes');
  if (sodium) {
    const publicKey = Buffer.alloc(32);
    const secretKey = Buffer.alloc(64);
    sodium.crypto_sign_seed_keypair(publicKey, secretKey, seed);
    return { publicKey, secretKey };
  }
  const priv = nodePrivate(Buffer.concat([seed, Buffer.alloc(32)]));
  const spki = createPublicKey(priv).export({ format: 'der', type: 'spki' });
  const publicKey = Buffer.from(spki.subarray(spki.length - 32));
  return { publicKey, secretKey: Buffer.concat([seed, publicKey]) };
}

/** A fresh random key pair. */
export function generateKeyPair(): KeyPair {
  return keyPairFromSeed(randomBytes(32));
}

/** Detached Ed25519 signature (64 bytes) of `message`. */
export function sign(message: Buffer, secretKey: Buffer): Buffer {
  if (secretKey.length !== 64) throw new RangeError('secret key must be 64 bytes');
  if (sodium) {
    const sig = Buffer.alloc(64);
    sodium.crypto_sign_detached(sig, message, secretKey);
    return sig;
  }
  return cSign(null, message, nodePrivate(secretKey));
}

/** Verify a detached Ed25519 signature; false (never a throw) on malformed input. */
export function verify(message: Buffer, signature: Buffer, publicKey: Buffer): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  if (sodium) {
    try {
      return sodium.crypto_sign_verify_detached(signature, message, publicKey);
    } catch {
      return false;
    }
  }
  try {
    return cVerify(null, message, nodePublic(publicKey), signature);
  } catch {
    return false;
  }
}

/** node:crypto verification, exposed for benchmarks. */
export function verifyNodeCrypto(message: Buffer, signature: Buffer, publicKey: Buffer): boolean {
  try {
    return cVerify(null, message, nodePublic(publicKey), signature);
  } catch {
    return false;
  }
}
