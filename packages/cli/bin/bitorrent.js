#!/usr/bin/env node
// Entry point of the `bitorrent` command. The sources are TypeScript, run through tsx's loader.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/main.ts');
await main(process.argv.slice(2));
