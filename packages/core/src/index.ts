export * from './bencode.js';
