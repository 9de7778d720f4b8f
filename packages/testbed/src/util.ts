/** Small, dependency-free helpers for tests and benches that drive real processes on loopback. */
import { createHash, createCipheriv } from 'node:crypto';
import { createReadStream, existsSync, accessSync, readdirSync, constants as fsc } from 'node:fs';
import { mkdtemp, rm, mkdir, open, readdir, stat, chmod } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join, dirname, relative, sep } from 'node:path';
import { registerCleanup } from './process.js';

/** True when running under CI (env CI=true or 1): missing tools are then failures, not skips. */
export function inCI(): boolean {
  const v = (process.env.CI ?? '').toLowerCase();
  return v === 'true' || v === '1' || v === 'yes';
}

const toolCache = new Map<string, string | undefined>();

/**
 * Finds an executable by name (or absolute path). Returns its path, or `undefined` when it
 * is missing so that the caller can `t.skip('<name> not installed')`. Under CI a missing
 * tool throws instead: CI installs every tool via scripts/setup-system.sh.
 */
export function requireTool(name: string): string | undefined {
  if (!toolCache.has(name)) toolCache.set(name, findExecutable(name));
  const found = toolCache.get(name);
  if (!found && inCI()) throw new Error(`required tool '${name}' is not installed (run scripts/setup-system.sh)`);
  return found;
}

/** Like requireTool but for the python3-libtorrent module of /usr/bin/python3. Returns the interpreter path. */
export function requireLibtorrent(): string | undefined {
  const key = 'python3-libtorrent';
  if (!toolCache.has(key)) {
    let ok: string | undefined;
    if (findExecutable('/usr/bin/python3')) {
      try {
        if (readdirSync('/usr/lib/python3/dist-packages').some((f) => f.startsWith('libtorrent'))) ok = '/usr/bin/python3';
      } catch { /* no dist-packages */ }
    }
    toolCache.set(key, ok);
  }
  const found = toolCache.get(key);
  if (!found && inCI()) throw new Error('python3-libtorrent is not installed for /usr/bin/python3 (run scripts/setup-system.sh)');
  return found;
}

function findExecutable(name: string): string | undefined {
  const candidates = name.includes('/') ? [name] : (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/usr/sbin', '/bin']).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, fsc.X_OK);
      return c;
    } catch { /* next */ }
  }
  return undefined;
}

export interface TempDir {
  path: string;
  /** Removes the directory tree (also done automatically by stopAll()). */
  cleanup(): Promise<void>;
}

/**
 * Creates a fresh directory under the OS temp dir. It is world-readable/traversable (0755) so
 * that daemons dropping privileges (opentracker) can read files in it. Removed by cleanup()
 * or by stopAll(), unless env TESTBED_KEEP=1.
 */
export async function tempDir(prefix = 'bitorrent-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix.endsWith('-') ? prefix : `${prefix}-`));
  await chmod(path, 0o755);
  let done = false;
  const cleanup = async (): Promise<void> => {
    if (done) return;
    done = true;
    if (process.env.TESTBED_KEEP === '1') {
      console.error(`testbed: keeping ${path}`);
      return;
    }
    await rm(path, { recursive: true, force: true });
  };
  registerCleanup(cleanup);
  return { path, cleanup };
}

/**
 * Returns a port that is currently free for both TCP and UDP on `host`. There is an
 * unavoidable race between this and the caller binding it; prefer port 0 where the program
 * under test can report the port it bound.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, host, () => {
        const p = (srv.address() as AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const s = createSocket('udp4');
      s.once('error', () => resolve(false));
      s.bind(port, host, () => s.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('freePort: could not find a port free for both TCP and UDP');
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Shown in the timeout error. */
  what?: string;
}

/**
 * Polls `predicate` until it returns a truthy value (which is returned), or throws after
 * timeoutMs. Errors thrown by the predicate count as "not yet" but the last one is reported.
 */
export async function waitFor<T>(predicate: () => T | Promise<T>, opts: WaitOptions = {}): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const intervalMs = opts.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await predicate();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const why = lastErr instanceof Error ? `: last error: ${lastErr.message}` : '';
      throw new Error(`waitFor timed out after ${timeoutMs} ms${opts.what ? ` waiting for ${opts.what}` : ''}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** One file of a payload: relative path (with '/') and size in bytes. */
export interface FileSpec {
  path: string;
  size: number;
}

/**
 * Writes files under `dir` with deterministic content (same seed → same bytes). Returns the
 * absolute paths written. Sizes may be 0. Paths may contain '/' for subfolders.
 */
export async function makeRandomFiles(dir: string, spec: FileSpec[], seed = 'bitorrent'): Promise<string[]> {
  const written: string[] = [];
  const chunk = 1 << 20;
  for (const f of spec) {
    const abs = join(dir, ...f.path.split('/'));
    await mkdir(dirname(abs), { recursive: true });
    const fh = await open(abs, 'w', 0o644);
    try {
      for (let off = 0; off < f.size; off += chunk) {
        const n = Math.min(chunk, f.size - off);
        await fh.write(deterministicBytes(`${seed}:${f.path}`, off, n), 0, n, off);
      }
    } finally {
      await fh.close();
    }
    written.push(abs);
  }
  return written;
}

/**
 * Deterministic, seekable pseudo-random bytes: the AES-256-CTR keystream of key SHA-256(seed),
 * starting at byte `offset`. Incompressible, fast (GB/s), same seed → same bytes.
 */
export function deterministicBytes(seed: string, offset: number, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(Math.floor(offset / 16)), 8);
  const c = createCipheriv('aes-256-ctr', key, iv);
  const skip = offset % 16;
  const out = c.update(Buffer.alloc(length + skip));
  return skip ? out.subarray(skip) : out;
}

/** SHA-1 of a file's content, hex. */
export async function sha1File(path: string): Promise<string> {
  const h = createHash('sha1');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

async function listFiles(root: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  async function walk(d: string): Promise<void> {
    for (const ent of await readdir(d, { withFileTypes: true })) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) await walk(p);
      else if (ent.isFile()) out.set(relative(root, p).split(sep).join('/'), (await stat(p)).size);
    }
  }
  await walk(root);
  return out;
}

export interface CompareResult {
  equal: boolean;
  /** Human-readable differences (missing/extra files, size or content mismatch). */
  differences: string[];
}

/**
 * Compares two files or two directory trees byte for byte. With `ignoreExtra`, files present
 * only in `b` are allowed (e.g. a client's .part/resume files).
 */
export async function compareTrees(a: string, b: string, opts: { ignoreExtra?: boolean } = {}): Promise<CompareResult> {
  const differences: string[] = [];
  const sa = await stat(a);
  if (!existsSync(b)) return { equal: false, differences: [`${b} does not exist`] };
  const sb = await stat(b);
  if (sa.isFile() || sb.isFile()) {
    if (!sa.isFile() || !sb.isFile()) return { equal: false, differences: [`${a} and ${b} are not both files`] };
    if (!(await sameContent(a, b))) differences.push(`content differs: ${a} vs ${b}`);
    return { equal: differences.length === 0, differences };
  }
  const fa = await listFiles(a);
  const fb = await listFiles(b);
  for (const [rel, size] of fa) {
    const other = fb.get(rel);
    if (other === undefined) differences.push(`missing in ${b}: ${rel}`);
    else if (other !== size) differences.push(`size differs for ${rel}: ${size} vs ${other}`);
    else if (!(await sameContent(join(a, rel), join(b, rel)))) differences.push(`content differs: ${rel}`);
  }
  if (!opts.ignoreExtra) for (const rel of fb.keys()) if (!fa.has(rel)) differences.push(`extra in ${b}: ${rel}`);
  return { equal: differences.length === 0, differences };
}

async function sameContent(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([stat(a), stat(b)]);
  if (x.size !== y.size) return false;
  const fa = await open(a, 'r');
  const fb = await open(b, 'r');
  try {
    const size = 1 << 20;
    const ba = Buffer.allocUnsafe(size);
    const bb = Buffer.allocUnsafe(size);
    for (let pos = 0; pos < x.size; pos += size) {
      const [ra, rb] = await Promise.all([fa.read(ba, 0, size, pos), fb.read(bb, 0, size, pos)]);
      if (ra.bytesRead !== rb.bytesRead) return false;
      if (!ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, rb.bytesRead))) return false;
    }
    return true;
  } finally {
    await fa.close();
    await fb.close();
  }
}

/** A standard multi-file payload of a few MB for interop tests (odd sizes, nested dir, one tiny file). */
export function multiFileSpec(totalScale = 1): FileSpec[] {
  const s = (n: number): number => Math.max(1, Math.round(n * totalScale));
  return [
    { path: 'a.bin', size: s(1_500_001) },
    { path: 'sub/b.bin', size: s(2_097_152) },
    { path: 'sub/deeper/c.txt', size: 7 },
    { path: 'd.bin', size: s(700_333) },
  ];
}
