export * from './bencode.js';
export * from './compact.js';
