/**
 * The `download` / `seed` commands' Speed options and help text, with no imports: the CLI parses its arguments with
 * these and loads the rest of Speed (ledger client, wallet, native crypto) only when --speed is given.
 */
/** node:util parseArgs option spec; spread into the command's own options. */
export const speedCliOptions = {
  speed: { type: 'boolean' },
  'no-speed': { type: 'boolean' },
  'spending-rate': { type: 'string' },
  'max-spend': { type: 'string' },
  'reserve-price': { type: 'string' },
  'unpaid-limit': { type: 'string' },
  ledger: { type: 'string' },
  wallet: { type: 'string' },
} as const;

export const SPEED_HELP = `BitTorrent Speed (off by default):
  --speed              bid BTT for faster downloads / earn BTT by uploading (needs a wallet: 'bitorrent wallet create')
  --no-speed           plain BitTorrent peer, no Speed at all (overrides --speed)
  --spending-rate R    fraction of the balance a torrent's bid may spend, 0..1 (default 1)
  --max-spend BTT      most one torrent may spend (default: no cap beyond the wallet balance)
  --reserve-price P    as a provider, lowest price accepted, base units per byte (default 0)
  --unpaid-limit SIZE  as a provider, data a requester may receive before paying, e.g. 1M, rounded to
                       whole pieces, 1..1024 (default 16M, 2..64 pieces; larger keeps fast transfers flowing)
  --ledger URL         ledger server (default $BITORRENT_LEDGER_URL)
  --wallet FILE        keystore (default $BITORRENT_HOME/wallet.json); passphrase from $BITORRENT_PASSPHRASE`;

export interface SpeedFlags {
  speed?: boolean;
  'no-speed'?: boolean;
  'spending-rate'?: string;
  'max-spend'?: string;
  'reserve-price'?: string;
  'unpaid-limit'?: string;
  ledger?: string;
  wallet?: string;
  /** The CLI's --state-dir (shared with resume data): provider channel states go to <state-dir>/speed/. */
  'state-dir'?: string;
}
