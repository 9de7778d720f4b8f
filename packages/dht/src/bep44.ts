/** BEP 44 item helpers: targets, the signed buffer, ed25519 sign/verify via node:crypto with raw 32-byte keys. */
import { createHash, createPrivateKey, createPublicKey, sign, verify, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { encode, type BencodeValue, type EncodableValue } from '@bitorrent/core';

export const MAX_ITEM_VALUE = 1000;
export const MAX_SALT = 64;

const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export interface KeyPair {
  /** Raw 32-byte ed25519 public key. */
  publicKey: Buffer;
  /** Raw 32-byte ed25519 seed (private key). */
  secretKey: Buffer;
}

export function generateKeyPair(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_PREFIX.length);
  return { publicKey: Buffer.from(pub), secretKey: Buffer.from(seed) };
}

export function keyPairFromSeed(seed: Buffer): KeyPair {
  if (seed.length !== 32) throw new RangeError('ed25519 seed must be 32 bytes');
  const priv = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const pub = createPublicKey(priv).export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
  return { publicKey: Buffer.from(pub), secretKey: Buffer.from(seed) };
}

function pubKeyObject(k: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, k]), format: 'der', type: 'spki' });
}

export function immutableTarget(v: EncodableValue | BencodeValue): Buffer {
  return createHash('sha1').update(encode(v as EncodableValue)).digest();
}

export function mutableTarget(publicKey: Uint8Array, salt?: Uint8Array): Buffer {
  const h = createHash('sha1').update(publicKey);
  if (salt && salt.length > 0) h.update(salt);
  return h.digest();
}

/** The exact byte string BEP 44 signs: ("4:salt" len ":" salt) "3:seqi" seq "e1:v" + bencoded v. */
export function signedBuffer(seq: number | bigint, encodedV: Buffer, salt?: Uint8Array): Buffer {
  const parts: Buffer[] = [];
  if (salt && salt.length > 0) parts.push(Buffer.from(`4:salt${salt.length}:`, 'latin1'), Buffer.from(salt));
  parts.push(Buffer.from(`3:seqi${seq}e1:v`, 'latin1'), encodedV);
  return Buffer.concat(parts);
}

export function signItem(secretKey: Buffer, seq: number | bigint, encodedV: Buffer, salt?: Uint8Array): Buffer {
  const priv = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, secretKey]), format: 'der', type: 'pkcs8' });
  return sign(null, signedBuffer(seq, encodedV, salt), priv);
}

export function verifyItem(publicKey: Uint8Array, sig: Uint8Array, seq: number | bigint, encodedV: Buffer, salt?: Uint8Array): boolean {
  if (publicKey.length !== 32 || sig.length !== 64) return false;
  try {
    return verify(null, signedBuffer(seq, encodedV, salt), pubKeyObject(publicKey), sig);
  } catch {
    return false;
  }
}
