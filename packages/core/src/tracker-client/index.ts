export * from './types.js';
export * from './http.js';
export * from './udp.js';
export * from './announcer.js';
