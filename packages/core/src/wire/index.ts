export * from './messages.js';
export * from './extensions.js';
export * from './peer-wire.js';
export * from './ut-metadata.js';
export * from './ut-pex.js';
export * from './fast.js';
export { mseInitiate, mseRespond, mseTorrentKey, isPlaintextHandshake, Rc4, Rc4Stream, MseError, CRYPTO_PLAINTEXT, CRYPTO_RC4, type EncryptionPolicy, type MseResult } from './mse.js';
