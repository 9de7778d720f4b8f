export * from './messages.js';
export * from './extensions.js';
export * from './peer-wire.js';
export * from './ut-metadata.js';
export * from './ut-pex.js';
export * from './fast.js';
