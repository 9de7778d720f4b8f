import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseRate, parseSize, formatBytes, formatRate, formatDuration, UnitError } from '../src/units.js';

test('parseRate: binary prefixes whatever the spelling, unlimited forms', () => {
  assert.equal(parseRate('500K'), 512000);
  assert.equal(parseRate('500KB/s'), 512000);
  assert.equal(parseRate('500kB/s'), 512000);
  assert.equal(parseRate('500KiB/s'), 512000);
  assert.equal(parseRate('2MiB/s'), 2 * 1024 * 1024);
  assert.equal(parseRate('1.5M'), 1.5 * 1024 * 1024);
  assert.equal(parseRate('1G'), 1024 ** 3);
  assert.equal(parseRate('1000'), 1000);
  assert.equal(parseRate('1000B/s'), 1000);
  assert.equal(parseRate('0'), 0);
  assert.equal(parseRate('unlimited'), 0);
  assert.equal(parseRate(' 3 M '), 3 * 1024 * 1024);
});

test('parseRate/parseSize reject garbage with a clear error', () => {
  for (const bad of ['', 'abc', '-5K', '5X', '1e3', 'K', '5Ki/s/s', 'NaN', '5i']) {
    assert.throws(() => parseRate(bad), UnitError, bad);
  }
  assert.throws(() => parseSize('5M/s'), /invalid size/);
  assert.throws(() => parseSize('99999999999T'), /too large/);
  assert.equal(parseSize('16KiB'), 16384);
  assert.equal(parseSize('4G'), 4 * 1024 ** 3);
});

test('formatBytes / formatRate', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1536), '1.50 KiB');
  assert.equal(formatBytes(10 * 1024 * 1024), '10.0 MiB');
  assert.equal(formatBytes(1024 * 1024 - 1), '1.00 MiB');
  assert.equal(formatBytes(250 * 1024 ** 3), '250 GiB');
  assert.equal(formatRate(2 * 1024 * 1024), '2.00 MiB/s');
  assert.equal(formatBytes(-2048), '-2.00 KiB');
});

test('formatDuration', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(45), '45s');
  assert.equal(formatDuration(187), '3m07s');
  assert.equal(formatDuration(3720), '1h02m');
  assert.equal(formatDuration(86400 * 2 + 3 * 3600), '2d03h');
  assert.equal(formatDuration(Infinity), '∞');
  assert.equal(formatDuration(NaN), '∞');
  assert.equal(formatDuration(-1), '∞');
});

test('parseSize(formatBytes-like input) round-trips integers with suffixes', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1_000_000 }), fc.constantFrom('', 'K', 'M', 'G'), (n, s) => {
      const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[s]!;
      assert.equal(parseSize(`${n}${s}`), n * mult);
      assert.equal(parseRate(`${n}${s}B/s`), n * mult);
    }),
  );
});
