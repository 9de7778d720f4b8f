/** The engine's choker interface and legacy choker (one import point for the speed package). */
export { StandardChoker } from '@bitorrent/core';
export type { ChokerPeer, ChokerPolicy, RechokeInput, RechokeResult, StandardChokerOptions } from '@bitorrent/core';
