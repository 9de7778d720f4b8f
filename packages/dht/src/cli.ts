/** `bitorrent dht`: run a standalone DHT node, look up or announce an info-hash, get/put BEP 44 items. */
import { parseArgs } from 'node:util';
import { parsePeerAddress, type PeerAddress } from '@bitorrent/core';
import { createDht, type Dht } from './dht.js';
import { keyPairFromSeed } from './bep44.js';

const DEFAULT_BOOTSTRAP = ['router.bittorrent.com:6881', 'dht.transmissionbt.com:6881', 'router.utorrent.com:6881'];

const HELP = `usage: bitorrent dht <command> [options]

commands:
  node                      run a DHT node until interrupted (prints the routing table size)
  lookup <infohash>         find peers for a 40-hex info-hash (get_peers lookup)
  announce <infohash>       announce that we have an info-hash (--peer-port or implied port; --seed)
  scrape <infohash>         BEP 33 estimate of seeds and downloaders
  get <target>              BEP 44 get (40-hex target; --salt for mutable items)
  put <value>               BEP 44 put of a string (immutable, or mutable with --seed-hex and --seq)

options:
  --port N                  UDP port to bind (default 0: any; 'node' default 6881)
  --host ADDR               bind address (default 0.0.0.0)
  --bootstrap host:port     bootstrap node (repeatable; default: public routers)
  --state FILE              persist node ID and routing table in FILE
  --peer-port N             port to announce (default: implied, our DHT port)
  --timeout S               give up after S seconds (default 30)
  --salt STR, --seq N, --seed-hex HEX   BEP 44 mutable items (ed25519 seed, 32 bytes hex)
  --json                    print machine-readable JSON
  -h, --help                show this help`;

function parseHash(s: string | undefined, what: string): Buffer {
  if (!s || !/^[0-9a-fA-F]{40}$/.test(s)) throw new Error(`${what} must be 40 hex characters`);
  return Buffer.from(s, 'hex');
}

function parseBootstrap(list: string[] | undefined): PeerAddress[] {
  return (list && list.length > 0 ? list : DEFAULT_BOOTSTRAP).map((b) => {
    try {
      return parsePeerAddress(b);
    } catch {
      throw new Error(`invalid --bootstrap '${b}' (expected host:port)`);
    }
  });
}

function withTimeout<T>(p: Promise<T>, seconds: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${seconds}s`)), seconds * 1000);
    }),
  ]);
}

export async function runDhtCli(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      bootstrap: { type: 'string', multiple: true },
      state: { type: 'string' },
      'peer-port': { type: 'string' },
      timeout: { type: 'string' },
      salt: { type: 'string' },
      seq: { type: 'string' },
      'seed-hex': { type: 'string' },
      json: { type: 'boolean' },
      seed: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [cmd, arg] = positionals;
  if (values.help || !cmd) {
    console.log(HELP);
    return cmd || values.help ? 0 : 2;
  }
  const known = ['node', 'lookup', 'announce', 'scrape', 'get', 'put'];
  if (!known.includes(cmd)) {
    console.error(`bitorrent dht: unknown command '${cmd}'\n\n${HELP}`);
    return 2;
  }
  const intOpt = (name: string, v: string | undefined, min: number, max: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}`);
    return n;
  };
  const port = intOpt('port', values.port, 0, 65535) ?? (cmd === 'node' ? 6881 : 0);
  const timeout = intOpt('timeout', values.timeout, 1, 86400) ?? 30;
  const bootstrap = parseBootstrap(values.bootstrap);
  const out = (obj: Record<string, unknown>, text: string) => console.log(values.json ? JSON.stringify(obj) : text);

  // Validate positional arguments before touching the network.
  const hashArg = cmd === 'lookup' || cmd === 'announce' || cmd === 'scrape' ? parseHash(arg, 'info-hash') : cmd === 'get' ? parseHash(arg, 'target') : undefined;
  if (cmd === 'put' && arg === undefined) throw new Error('put needs a value');
  const peerPort = intOpt('peer-port', values['peer-port'], 1, 65535);
  if (values['seed-hex'] !== undefined && !/^[0-9a-fA-F]{64}$/.test(values['seed-hex'])) throw new Error('--seed-hex must be 64 hex characters');
  const seq = intOpt('seq', values.seq, 0, Number.MAX_SAFE_INTEGER);

  const dht: Dht = await createDht({ port, host: values.host, bootstrap: [], stateFile: values.state });
  try {
    if (cmd === 'node') out({ event: 'listening', port: dht.port, id: dht.id.toString('hex') }, `dht: node ${dht.id.toString('hex')} listening on UDP port ${dht.port}`);
    const n = await withTimeout(dht.bootstrap(bootstrap), timeout, 'bootstrap');
    if (!values.json) console.error(`dht: node ${dht.id.toString('hex')} on UDP port ${dht.port}, ${n} nodes in routing table`);
    switch (cmd) {
      case 'node': {
        dht.on('peer', (ih: Buffer, p: PeerAddress) => out({ event: 'announce', infoHash: ih.toString('hex'), peer: p }, `announce ${ih.toString('hex')} from ${p.host}:${p.port}`));
        await new Promise<void>((resolve) => {
          const tick = setInterval(() => out({ event: 'status', nodes: dht.nodeCount() }, `dht: ${dht.nodeCount()} nodes`), 60_000);
          const stop = () => {
            clearInterval(tick);
            process.off('SIGINT', stop);
            process.off('SIGTERM', stop);
            resolve();
          };
          process.on('SIGINT', stop);
          process.on('SIGTERM', stop);
        });
        return 0;
      }
      case 'lookup': {
        const ih = hashArg!;
        const started = Date.now();
        const peers = await withTimeout(
          dht.getPeers(ih, { onPeers: (ps) => { if (!values.json) for (const p of ps) console.log(`${p.host}:${p.port}`); } }),
          timeout,
          'lookup',
        );
        if (values.json) out({ infoHash: arg, peers, ms: Date.now() - started, stats: dht.lastLookup }, '');
        else console.error(`dht: ${peers.length} peers in ${Date.now() - started} ms`);
        return peers.length > 0 ? 0 : 1;
      }
      case 'announce': {
        const ih = hashArg!;
        const acked = await withTimeout(dht.announceCount(ih, peerPort ?? 'implied', { seed: !!values.seed }), timeout, 'announce');
        out({ infoHash: arg, acked }, `announced to ${acked} nodes`);
        return acked > 0 ? 0 : 1;
      }
      case 'scrape': {
        const c = await withTimeout(dht.scrape(hashArg!), timeout, 'scrape');
        out({ infoHash: arg, ...c }, `${c.seeds} seeds, ${c.peers} downloaders (estimates)`);
        return 0;
      }
      case 'get': {
        const target = hashArg!;
        const item = await withTimeout(dht.get(target, { salt: values.salt ? Buffer.from(values.salt) : undefined }), timeout, 'get');
        if (!item) {
          out({ target: arg, found: false }, 'not found');
          return 1;
        }
        const v = item.v instanceof Uint8Array ? Buffer.from(item.v).toString('utf8') : JSON.stringify(item.v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x));
        out({ target: arg, found: true, v, seq: item.seq }, item.seq !== undefined ? `seq ${item.seq}: ${v}` : v);
        return 0;
      }
      case 'put': {
        const v = Buffer.from(arg!);
        let res: { target: Buffer; stored: number };
        if (values['seed-hex']) {
          const keyPair = keyPairFromSeed(Buffer.from(values['seed-hex'], 'hex'));
          res = await withTimeout(dht.put({ v, keyPair, seq: seq ?? 0, salt: values.salt ? Buffer.from(values.salt) : undefined }), timeout, 'put');
        } else {
          res = await withTimeout(dht.put({ v }), timeout, 'put');
        }
        out({ target: res.target.toString('hex'), stored: res.stored }, `${res.target.toString('hex')} stored on ${res.stored} nodes`);
        return res.stored > 0 ? 0 : 1;
      }
    }
    return 2;
  } finally {
    await dht.close();
  }
}
