/** Per-process figures from /proc (Linux): peak RSS sampling, CPU time. */
import { readdirSync, readFileSync } from 'node:fs';

/** VmHWM (peak resident set) of a live process in bytes, or undefined if it is gone. */
export function peakRss(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** user + system CPU seconds in a /proc `stat` file (a process's or one thread's); throws if it cannot be read. */
function statCpuSeconds(path: string): number {
  const st = readFileSync(path, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** user + system CPU seconds of a live process (all its threads), or undefined if it is gone. */
export function procCpuSeconds(pid: number): number | undefined {
  try {
    return statCpuSeconds(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
}

/** RssAnon (anonymous resident memory, excluding mapped file pages) in bytes. */
export function anonRss(pid: number): number | undefined {
  try {
    const m = /RssAnon:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Samples VmHWM (kernel-tracked peak RSS, file-backed mmap pages included) every intervalMs,
 * and RssAnon (sampled peak of anonymous memory: heap, buffers — what mmap-based disk I/O
 * like libtorrent's does not inflate).
 */
export class RssSampler {
  private max = 0;
  /** Largest RssAnon seen, bytes. */
  anonMax = 0;
  private timer: NodeJS.Timeout;
  constructor(private readonly pid: number, intervalMs = 200) {
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }
  sample(): number {
    const v = peakRss(this.pid);
    if (v !== undefined && v > this.max) this.max = v;
    const a = anonRss(this.pid);
    if (a !== undefined && a > this.anonMax) this.anonMax = a;
    return this.max;
  }
  /** Takes a last sample and stops; returns the peak in bytes. */
  stop(): number {
    this.sample();
    clearInterval(this.timer);
    return this.max;
  }
}

/**
 * CPU seconds of a live process's main thread and of all its other threads together (V8's compiler and GC helpers,
 * the libuv pool, worker threads: Node names them all "node", so they cannot be told apart), from /proc/<pid>/task.
 * Threads that have exited are not counted. undefined if the process is gone.
 */
export function mainThreadSplit(pid: number): { main: number; other: number } | undefined {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  const out = { main: 0, other: 0 };
  for (const tid of tids) {
    try {
      out[tid === String(pid) ? 'main' : 'other'] += statCpuSeconds(`/proc/${pid}/task/${tid}/stat`);
    } catch {
      /* the thread exited */
    }
  }
  return out;
}
