import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { encode, type EncodableValue } from '../src/bencode.js';
import { MetainfoError, filesForPiece, parseInfoDict, parseTorrent, pieceHash, pieceSize, piecesForFile } from '../src/metainfo.js';

const sha1 = (b: Uint8Array) => createHash('sha1').update(b).digest();

function info(over: Record<string, EncodableValue | undefined> = {}): Record<string, EncodableValue> {
  const base: Record<string, EncodableValue | undefined> = {
    name: 'file.bin',
    'piece length': 16384,
    length: 40000,
    pieces: Buffer.alloc(60, 1),
    ...over,
  };
  for (const k of Object.keys(base)) if (base[k] === undefined) delete base[k];
  return base as Record<string, EncodableValue>;
}
const torrent = (i: EncodableValue, extra: Record<string, EncodableValue> = {}) => encode({ announce: 'http://t/a', info: i, ...extra });

test('single-file torrent: fields, info-hash from exact info bytes', () => {
  const i = info();
  const t = torrent(i, { comment: 'hi', 'created by': 'me', 'creation date': 1700000000 });
  const m = parseTorrent(t);
  assert.equal(m.name, 'file.bin');
  assert.equal(m.length, 40000);
  assert.equal(m.pieceCount, 3);
  assert.deepEqual(m.infoHash, sha1(encode(i)));
  assert.equal(m.infoHashHex, m.infoHash.toString('hex'));
  assert.deepEqual(m.announce, [['http://t/a']]);
  assert.equal(m.comment, 'hi');
  assert.equal(m.createdBy, 'me');
  assert.equal(m.creationDate, 1700000000);
  assert.equal(m.private, false);
  assert.equal(m.isHybrid, false);
  assert.deepEqual(m.files, [{ path: ['file.bin'], name: 'file.bin', length: 40000, offset: 0, pad: false }]);
  assert.equal(pieceSize(m, 0), 16384);
  assert.equal(pieceSize(m, 2), 40000 - 2 * 16384);
  assert.throws(() => pieceSize(m, 3), RangeError);
  assert.deepEqual(pieceHash(m, 1), Buffer.alloc(20, 1));
  assert.deepEqual(m.infoBuffer, encode(i));
});

test('info-hash uses the exact bytes even when the info dict is not canonically encoded', () => {
  // Unsorted keys inside info: a re-encoding would sort them and change the hash.
  const raw = Buffer.concat([
    Buffer.from('d8:announce3:x:y4:infod'),
    Buffer.from('4:name1:a12:piece lengthi16384e6:lengthi5e6:pieces20:'),
    Buffer.alloc(20, 9),
    Buffer.from('ee'),
  ]);
  const m = parseTorrent(raw);
  const start = raw.indexOf('4:infod') + 6;
  assert.deepEqual(m.infoHash, sha1(raw.subarray(start, raw.length - 1)));
  assert.notDeepEqual(m.infoHash, sha1(encode({ name: 'a', 'piece length': 16384, length: 5, pieces: Buffer.alloc(20, 9) })));
});

test('multi-file: offsets, root folder in paths, utf-8 variants preferred, pad files', () => {
  const i = info({
    length: undefined,
    name: 'bad-name', 'name.utf-8': 'Böse',
    pieces: Buffer.alloc(40),
    files: [
      { length: 10, path: ['a', 'b.txt'], 'path.utf-8': ['ä', 'b.txt'] },
      { length: 0, path: ['empty'] },
      { length: 16374, path: ['.pad', '16374'], attr: 'p' },
      { length: 7, path: ['c'] },
      { length: 3, path: ['_____padding_file_0_'] },
    ],
  });
  const m = parseTorrent(torrent(i));
  assert.equal(m.name, 'Böse');
  assert.equal(m.length, 16394);
  assert.deepEqual(m.files.map((f) => [f.name, f.offset, f.length, f.pad]), [
    ['Böse/ä/b.txt', 0, 10, false],
    ['Böse/empty', 10, 0, false],
    ['Böse/.pad/16374', 10, 16374, true],
    ['Böse/c', 16384, 7, false],
    ['Böse/_____padding_file_0_', 16391, 3, true],
  ]);
  assert.equal(m.files[2].attr, 'p');
  assert.deepEqual(filesForPiece(m, 0), [0, 1, 2]);
  assert.deepEqual(filesForPiece(m, 1), [3, 4]);
  assert.deepEqual(piecesForFile(m, 3), [1, 1]);
  assert.equal(piecesForFile(m, 1), undefined);
});

test('announce-list tiers (BEP 12), empty tiers dropped, fallback to announce; url-list string or list', () => {
  const t = torrent(info(), {
    'announce-list': [[], ['http://a/1', 'http://a/2'], [Buffer.from('udp://b/1')], ['http://a/1'], [5 as unknown as EncodableValue]],
    'url-list': ['http://ws/1', 'http://ws/1', 'http://ws/2'],
  });
  const m = parseTorrent(t);
  assert.deepEqual(m.announce, [['http://a/1', 'http://a/2'], ['udp://b/1']]);
  assert.deepEqual(m.urlList, ['http://ws/1', 'http://ws/2']);
  const m2 = parseTorrent(torrent(info(), { 'announce-list': [[]], 'url-list': 'http://ws/x' }));
  assert.deepEqual(m2.announce, [['http://t/a']]);
  assert.deepEqual(m2.urlList, ['http://ws/x']);
  const m3 = parseTorrent(encode({ info: info(), unknown: { x: 1 } }));
  assert.deepEqual(m3.announce, []);
});

test('private flag, hybrid v1+v2 parses the v1 part, v2-only rejected', () => {
  assert.equal(parseTorrent(torrent(info({ private: 1 }))).private, true);
  const hybrid = parseTorrent(torrent(info({ 'meta version': 2, 'file tree': { 'file.bin': { '': { length: 40000 } } } })));
  assert.equal(hybrid.isHybrid, true);
  assert.equal(hybrid.pieceCount, 3);
  assert.throws(
    () => parseTorrent(torrent(info({ pieces: undefined, 'meta version': 2, 'file tree': {} }))),
    (e: Error) => e instanceof MetainfoError && e.message === 'v2-only torrents (BEP 52) are not supported yet',
  );
});

test('parseInfoDict: metadata from a magnet, expected hash checked', () => {
  const buf = encode(info());
  const m = parseInfoDict(buf, { announce: [['udp://x/1']], expectedInfoHash: sha1(buf) });
  assert.deepEqual(m.announce, [['udp://x/1']]);
  assert.deepEqual(m.infoHash, sha1(buf));
  assert.throws(() => parseInfoDict(buf, { expectedInfoHash: Buffer.alloc(20) }), /does not match the expected info-hash/);
  assert.throws(() => parseInfoDict(Buffer.from('d4:name')), (e: Error) => e instanceof MetainfoError && /info: not valid bencode/.test(e.message));
});

const multi = (files: EncodableValue[], over: Record<string, EncodableValue | undefined> = {}) =>
  torrent(info({ length: undefined, name: 'dir', files, pieces: Buffer.alloc(20), ...over }));

const corpus: [string, () => Uint8Array, RegExp][] = [
  ['not bencode', () => Buffer.from('hello'), /not a valid torrent file: bencode/],
  ['top level list', () => encode([1, 2]), /top level is not a dictionary/],
  ['no info', () => encode({ announce: 'x' }), /^info: missing/],
  ['info not a dict', () => encode({ info: 5 }), /^info: expected a dictionary/],
  ['pieces not multiple of 20', () => torrent(info({ pieces: Buffer.alloc(41) })), /^info\.pieces: length 41 is not a multiple of 20$/],
  ['pieces count mismatch', () => torrent(info({ pieces: Buffer.alloc(40) })), /^info\.pieces: has 2 hashes but 40000 bytes in pieces of 16384 need 3$/],
  ['missing pieces', () => torrent(info({ pieces: undefined })), /^info\.pieces: missing/],
  ['piece length zero', () => torrent(info({ 'piece length': 0 })), /^info\.piece length: must be positive/],
  ['piece length negative', () => torrent(info({ 'piece length': -16384 })), /^info\.piece length: must be positive/],
  ['piece length huge', () => torrent(info({ 'piece length': 128 * 1024 * 1024 })), /^info\.piece length: 134217728 exceeds the maximum/],
  ['piece length missing', () => torrent(info({ 'piece length': undefined })), /^info\.piece length: missing/],
  ['negative length', () => torrent(info({ length: -1 })), /^info\.length: negative length -1/],
  ['huge length (bigint)', () => torrent(info({ length: 2n ** 70n })), /^info\.length: integer \d+ is out of range/],
  ['no length nor files', () => torrent(info({ length: undefined })), /^info\.length: missing/],
  ['both length and files', () => torrent(info({ files: [{ length: 1, path: ['a'] }] })), /has both 'length' and 'files'/],
  ['name missing', () => torrent(info({ name: undefined })), /^info\.name: missing/],
  ['name ..', () => torrent(info({ name: '..' })), /^info\.name: component '\.\.' is not allowed/],
  ['name with slash', () => torrent(info({ name: '/etc' })), /^info\.name: component '\/etc' contains a path separator/],
  ['path traversal', () => multi([{ length: 1, path: ['a'] }, { length: 1, path: ['b'] }, { length: 1, path: ['c'] }, { length: 1, path: ['x', '..', 'y'] }], { pieces: Buffer.alloc(20) }), /^info\.files\[3\]\.path: component '\.\.' is not allowed$/],
  ['absolute path component', () => multi([{ length: 1, path: ['/etc', 'passwd'] }]), /^info\.files\[0\]\.path: component '\/etc' contains a path separator/],
  ['backslash path', () => multi([{ length: 1, path: ['..\\..\\x'] }]), /^info\.files\[0\]\.path: .*path separator/],
  ['drive path', () => multi([{ length: 1, path: ['C:', 'x'] }]), /^info\.files\[0\]\.path: component 'C:' looks like an absolute/],
  ['empty component', () => multi([{ length: 1, path: ['a', '', 'b'] }]), /^info\.files\[0\]\.path: empty path component/],
  ['empty path list', () => multi([{ length: 1, path: [] }]), /^info\.files\[0\]\.path: empty path/],
  ['NUL in path', () => multi([{ length: 1, path: ['a\0b'] }]), /^info\.files\[0\]\.path: component contains a NUL byte/],
  ['negative file length', () => multi([{ length: -5, path: ['a'] }]), /^info\.files\[0\]\.length: negative length -5/],
  ['file length not int', () => multi([{ length: 'x', path: ['a'] }]), /^info\.files\[0\]\.length: expected an integer/],
  ['files not a list', () => torrent(info({ length: undefined, files: 'x' })), /^info\.files: expected a list/],
  ['empty files list', () => torrent(info({ length: undefined, files: [] })), /^info\.files: empty list/],
  ['duplicate path', () => multi([{ length: 1, path: ['a'] }, { length: 1, path: ['a'] }]), /^info\.files\[1\]\.path: 'a' duplicates info\.files\[0\]/],
  ['file used as dir', () => multi([{ length: 1, path: ['a'] }, { length: 1, path: ['a', 'b'] }]), /^info\.files\[1\]\.path: directory 'a' is also a file/],
  ['zero total length', () => torrent(info({ length: 0, pieces: Buffer.alloc(0) })), /holds no data/],
  ['unsupported meta version', () => torrent(info({ pieces: undefined, 'meta version': 3 })), /^info\.meta version: unsupported version 3/],
];

for (const [name, make, re] of corpus) {
  test(`malformed: ${name}`, () => {
    assert.throws(() => parseTorrent(make()), (e: Error) => {
      assert.ok(e instanceof MetainfoError, `expected MetainfoError, got ${e.name}: ${e.message}`);
      assert.match(e.message, re);
      return true;
    });
  });
}

test('property: hostile bytes (mutated torrents) either parse or throw MetainfoError, nothing else', () => {
  const valid = torrent(info({ length: undefined, name: 'd', pieces: Buffer.alloc(20), files: [{ length: 3, path: ['a', 'b'] }, { length: 4, path: ['c'] }] }), {
    'announce-list': [['http://a'], ['http://b']],
  });
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'del', 'ins')), { minLength: 1, maxLength: 6 }), (muts) => {
      let b = Buffer.from(valid);
      for (const [pos, byte, op] of muts) {
        const p = pos % (b.length + 1);
        if (op === 'set' && p < b.length) b[p] = byte;
        else if (op === 'del') b = Buffer.concat([b.subarray(0, p), b.subarray(p + 1)]);
        else b = Buffer.concat([b.subarray(0, p), Buffer.from([byte]), b.subarray(p)]);
      }
      try {
        const m = parseTorrent(b);
        for (const f of m.files) for (const c of f.path) assert.ok(c !== '..' && c !== '.' && c !== '' && !c.includes('/') && !c.includes('\0'));
        assert.equal(m.pieceHashes.length, m.pieceCount * 20);
      } catch (e) {
        if (!(e instanceof MetainfoError)) throw e;
      }
    }),
    { numRuns: 2000 },
  );
});
