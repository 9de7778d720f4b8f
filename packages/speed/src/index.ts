/**
 * @bitorrent/speed — BitTorrent Speed: bids, auction-based unchoking and per-piece payments over ledger channels.
 * A plugin: core does not import it. Protocol: docs/speed-protocol.md.
 */
export * from './messages.js';
export * from './auction.js';
export * from './bidder.js';
export * from './payments.js';
export * from './extension.js';
export * from './agent.js';
export * from './cli-options.js';
export * from './persist.js';
