/**
 * Wallet keystore: one Ed25519 key, its 32-byte seed encrypted with AES-256-GCM under a key derived from the
 * passphrase with scrypt (N=2^15, r=8, p=1). The public key is stored in clear (and bound as GCM associated data).
 * Default location: $BITORRENT_HOME/wallet.json, else $XDG_CONFIG_HOME/bitorrent/wallet.json, else ~/.config/bitorrent/wallet.json.
 */
import { scryptSync, randomBytes, createCipheriv, createDecipheriv } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync, existsSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { keyPairFromSeed, type KeyPair } from './keys.js';
import { fromHex } from './codec.js';

export interface KeystoreFile {
  version: 1;
  publicKey: string;
  kdf: { name: 'scrypt'; N: number; r: number; p: number; salt: string };
  cipher: { name: 'aes-256-gcm'; iv: string; tag: string };
  ciphertext: string;
}

export function defaultKeystorePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BITORRENT_HOME) return join(env.BITORRENT_HOME, 'wallet.json');
  const base = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'bitorrent', 'wallet.json');
}

function derive(pass: string, kdf: KeystoreFile['kdf']): Buffer {
  return scryptSync(Buffer.from(pass, 'utf8'), Buffer.from(kdf.salt, 'hex'), 32, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: 256 * kdf.N * kdf.r });
}

export function encryptKeystore(keys: KeyPair, passphrase: string, N = 1 << 15): KeystoreFile {
  const kdf = { name: 'scrypt' as const, N, r: 8, p: 1, salt: randomBytes(16).toString('hex') };
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', derive(passphrase, kdf), iv);
  c.setAAD(keys.publicKey);
  const ct = Buffer.concat([c.update(keys.secretKey.subarray(0, 32)), c.final()]);
  return { version: 1, publicKey: keys.publicKey.toString('hex'), kdf, cipher: { name: 'aes-256-gcm', iv: iv.toString('hex'), tag: c.getAuthTag().toString('hex') }, ciphertext: ct.toString('hex') };
}

export function parseKeystore(text: string): KeystoreFile {
  let j: KeystoreFile;
  try {
    j = JSON.parse(text) as KeystoreFile;
  } catch {
    throw new Error('keystore is not valid JSON');
  }
  if (j?.version !== 1 || j.kdf?.name !== 'scrypt' || j.cipher?.name !== 'aes-256-gcm') throw new Error('unsupported keystore format');
  fromHex(j.publicKey, 32, 'keystore publicKey');
  if (!Number.isSafeInteger(j.kdf.N) || j.kdf.N < 2 || j.kdf.N > 1 << 20 || (j.kdf.N & (j.kdf.N - 1)) !== 0) throw new Error('keystore: bad scrypt N');
  if (j.kdf.r < 1 || j.kdf.r > 32 || j.kdf.p < 1 || j.kdf.p > 16) throw new Error('keystore: bad scrypt parameters');
  return j;
}

export function decryptKeystore(k: KeystoreFile, passphrase: string): KeyPair {
  const pub = fromHex(k.publicKey, 32, 'publicKey');
  const d = createDecipheriv('aes-256-gcm', derive(passphrase, k.kdf), fromHex(k.cipher.iv, 12, 'iv'));
  d.setAAD(pub);
  d.setAuthTag(fromHex(k.cipher.tag, 16, 'tag'));
  let seed: Buffer;
  try {
    seed = Buffer.concat([d.update(fromHex(k.ciphertext, 32, 'ciphertext')), d.final()]);
  } catch {
    throw new Error('wrong passphrase (or corrupted keystore)');
  }
  const kp = keyPairFromSeed(seed);
  if (!kp.publicKey.equals(pub)) throw new Error('keystore public key does not match its secret');
  return kp;
}

export function readKeystore(path: string): KeystoreFile {
  if (!existsSync(path)) throw new Error(`no wallet at ${path} (run 'bitorrent wallet create')`);
  return parseKeystore(readFileSync(path, 'utf8'));
}

export function writeKeystore(path: string, k: KeystoreFile): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(k, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}
