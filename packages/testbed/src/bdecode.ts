/**
 * A deliberately tiny, independent bencode reader used by the test bed as an oracle
 * (info-hash of the exact info bytes, tracker replies). It must not share code with the
 * engine under test, so a bug there cannot hide itself in the checks.
 */
export type BValue = number | Buffer | BValue[] | { [k: string]: BValue };

export function bdecode(buf: Buffer): { value: BValue; infoSpan?: Buffer } {
  let pos = 0;
  let infoSpan: Buffer | undefined;
  const fail = (m: string): never => {
    throw new Error(`bencode: ${m} at ${pos}`);
  };
  const read = (depth: number): BValue => {
    if (depth > 64) fail('too deep');
    const c = buf[pos];
    if (c === 0x69) {
      const end = buf.indexOf(0x65, pos);
      if (end < 0) fail('unterminated int');
      const n = Number(buf.toString('latin1', pos + 1, end));
      if (!Number.isFinite(n)) fail('bad int');
      pos = end + 1;
      return n;
    }
    if (c === 0x6c) {
      pos++;
      const l: BValue[] = [];
      while (buf[pos] !== 0x65) {
        if (pos >= buf.length) fail('unterminated list');
        l.push(read(depth + 1));
      }
      pos++;
      return l;
    }
    if (c === 0x64) {
      pos++;
      const d: { [k: string]: BValue } = {};
      while (buf[pos] !== 0x65) {
        if (pos >= buf.length) fail('unterminated dict');
        const k = read(depth + 1);
        if (!Buffer.isBuffer(k)) fail('dict key not a string');
        const key = (k as Buffer).toString('latin1');
        const start = pos;
        d[key] = read(depth + 1);
        if (depth === 0 && key === 'info') infoSpan = buf.subarray(start, pos);
      }
      pos++;
      return d;
    }
    if (c !== undefined && c >= 0x30 && c <= 0x39) {
      const colon = buf.indexOf(0x3a, pos);
      if (colon < 0) fail('bad string length');
      const len = Number(buf.toString('latin1', pos, colon));
      if (!Number.isInteger(len) || colon + 1 + len > buf.length) fail('string overruns buffer');
      pos = colon + 1 + len;
      return buf.subarray(colon + 1, pos);
    }
    return fail(`unexpected byte ${c}`);
  };
  const value = read(0);
  return { value, infoSpan };
}

export function isBDict(v: BValue | undefined): v is { [k: string]: BValue } {
  return typeof v === 'object' && v !== null && !Buffer.isBuffer(v) && !Array.isArray(v);
}
