import { startProcess } from '../src/index.ts';
try { startProcess('/nonexistent/bin', []); } catch (e) { console.log('threw', (e as Error).message); }
await new Promise((r) => setTimeout(r, 200));
console.log('alive');
