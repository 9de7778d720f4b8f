export * from './interface.js';
export * from './file-storage.js';
export * from './check.js';
export * from './resume.js';
