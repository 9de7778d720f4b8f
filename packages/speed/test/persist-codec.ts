/** The state-file codec now lives in src/persist.ts; re-exported here for the tests that import it from this path. */
export { encodePersisted, decodePersisted } from '../src/persist.js';
