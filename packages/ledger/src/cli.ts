/**
 * `bitorrent ledger serve|init|verify|info` and `bitorrent wallet create|address|balance|faucet|send|channels|history`.
 */
import { parseArgs } from 'node:util';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { generateKeyPair, keyPairFromSeed, type KeyPair } from './keys.js';
import { fromHex, formatBtt, parseBtt } from './codec.js';
import { Ledger, type GenesisParams } from './ledger.js';
import { openStorage, isPostgresUrl } from './storage.js';
import { verifyJournal } from './verify.js';
import { createLedgerServer } from './server.js';
import { LedgerClient } from './client.js';
import { LedgerError } from './state.js';
import { defaultKeystorePath, encryptKeystore, decryptKeystore, readKeystore, writeKeystore } from './keystore.js';

const LEDGER_HELP = `usage: bitorrent ledger <serve|init|verify|info> [options]

  serve    run the ledger HTTP/JSON server (creates the ledger on first start)
  init     create a ledger (genesis + key) without serving
  verify   replay the journal from genesis: every hash, signature, checkpoint and the final state
  info     print the ledger's id, height and supply (offline)

options:
  --db PATH|URL            SQLite file (default ./ledger.db) or postgres://user@host:port/db
  --key FILE               ledger signing key (default <db>.key for SQLite; created on init)
  --host ADDR              bind address (default 127.0.0.1)
  --port N                 HTTP port (default 7700; 0 = any)
  --genesis PUB=BTT        initial allocation (repeatable); the rest of the 990,000,000,000 BTT goes to the ledger key (faucet)
  --faucet-amount BTT      faucet payout per new key (default 100)
  --faucet-difficulty N    faucet proof of work, leading zero bits (default 16)
  --max-channel-hours N    longest channel lifetime (default 720)
  --op-id-window-hours N   retry window of op ids, new ledgers only (default 24; 0 = remember every op id forever)
  --verify-threads N       signature-verification worker threads (default: one per core, max 4)
  --gather-ms N            adaptive group commit: wait up to N ms for ops still being verified (default 0: off)
  --commit-window-ms N     extra wait to gather a commit batch (default 0)
  --rate N                 operations per second per signing key (default 1000)
  --snapshot-every N       save a state snapshot every N journal entries and on shutdown, so start-up replays only
                           the journal tail (default 100000; 0 = none, start-up replays the whole journal)
  -h, --help               this help
`;

const WALLET_HELP = `usage: bitorrent wallet <command> [options]

  create                    create a new key in the keystore
  address                   print your public key (account address)
  balance [ADDRESS]         balance of your account (or ADDRESS)
  faucet                    claim the faucet (solves the proof of work)
  send ADDRESS AMOUNT       transfer AMOUNT BTT (decimal, e.g. 1.5) to ADDRESS
  channels                  your payment channels (as requester or provider)
  history                   your recent journal entries

options:
  --keystore FILE    keystore path (default $BITORRENT_HOME/wallet.json or $XDG_CONFIG_HOME/bitorrent/wallet.json)
  --ledger URL       ledger server (default $BITORRENT_LEDGER or http://127.0.0.1:7700)
  --op-id HEX        client operation id (32 hex chars) for an idempotent retry of send
  --limit N          history entries (default 20)
  --force            create: overwrite an existing keystore
  --json             machine-readable output
  -h, --help         this help

The passphrase comes from $BITORRENT_PASSPHRASE, else it is prompted for.
`;

function intOpt(v: string | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}, got '${v}'`);
  return n;
}

function keyPathFor(db: string, key: string | undefined): string {
  if (key) return key;
  if (isPostgresUrl(db)) throw new Error('--key FILE is required with a PostgreSQL --db');
  return `${db}.key`;
}

export function loadOrCreateLedgerKey(path: string, create: boolean): KeyPair {
  if (existsSync(path)) {
    const j = JSON.parse(readFileSync(path, 'utf8')) as { seed?: unknown };
    return keyPairFromSeed(fromHex(j.seed, 32, 'ledger key seed'));
  }
  if (!create) throw new Error(`ledger key file ${path} not found`);
  const kp = generateKeyPair();
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify({ seed: kp.secretKey.subarray(0, 32).toString('hex'), publicKey: kp.publicKey.toString('hex') }) + '\n', { mode: 0o600, flag: 'wx' });
  return kp;
}

function genesisFrom(v: Record<string, unknown>): GenesisParams {
  const allocations = ((v.genesis as string[] | undefined) ?? []).map((g) => {
    const m = /^([0-9a-fA-F]{64})=(.+)$/.exec(g);
    if (!m) throw new Error(`--genesis expects PUBKEYHEX=BTT, got '${g}'`);
    return { account: Buffer.from(m[1]!, 'hex'), amount: parseBtt(m[2]!) };
  });
  return {
    allocations,
    faucetAmount: v['faucet-amount'] !== undefined ? parseBtt(v['faucet-amount'] as string) : undefined,
    faucetDifficulty: intOpt(v['faucet-difficulty'] as string | undefined, 'faucet-difficulty', 16, 0, 64),
    maxChannelMs: intOpt(v['max-channel-hours'] as string | undefined, 'max-channel-hours', 720, 1, 24 * 3650) * 3600_000,
    opIdWindowMs: intOpt(v['op-id-window-hours'] as string | undefined, 'op-id-window-hours', 24, 0, 24 * 3650) * 3600_000,
  };
}

export async function runLedgerCli(argv: string[]): Promise<number | void> {
  const { values: v, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      db: { type: 'string' },
      key: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      genesis: { type: 'string', multiple: true },
      'faucet-amount': { type: 'string' },
      'faucet-difficulty': { type: 'string' },
      'max-channel-hours': { type: 'string' },
      'verify-threads': { type: 'string' },
      'gather-ms': { type: 'string' },
      'op-id-window-hours': { type: 'string' },
      'commit-window-ms': { type: 'string' },
      'snapshot-every': { type: 'string' },
      rate: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const cmd = positionals[0];
  if (v.help || !cmd) {
    console.log(LEDGER_HELP);
    return cmd || v.help ? 0 : 2;
  }
  const db = v.db ?? 'ledger.db';
  // verify and info read an existing ledger: a mistyped path must not create an empty database (SQLite would).
  if ((cmd === 'verify' || cmd === 'info') && !isPostgresUrl(db) && db !== ':memory:' && !existsSync(db)) {
    console.error(`bitorrent ledger ${cmd}: no ledger database at '${db}' (create one with 'bitorrent ledger init --db ${db}')`);
    return 1;
  }
  if (cmd === 'verify') {
    const storage = await openStorage(db, { readOnly: true }); // checking a journal never changes it
    try {
      await storage.init();
      const rep = await verifyJournal(storage);
      console.log(JSON.stringify(rep));
      if (!rep.ok) {
        console.error(`journal verification FAILED: ${rep.error}`);
        return 1;
      }
      console.error(`journal OK: ${rep.entries} entries, supply ${formatBtt(BigInt(rep.supply!))} BTT conserved`);
      return 0;
    } finally {
      await storage.close();
    }
  }
  if (cmd !== 'serve' && cmd !== 'init' && cmd !== 'info') {
    console.error(`bitorrent ledger: unknown subcommand '${cmd}'\n\n${LEDGER_HELP}`);
    return 2;
  }
  const keyPath = keyPathFor(db, v.key);
  const ledgerKeys = loadOrCreateLedgerKey(keyPath, cmd !== 'info');
  const ledger = await Ledger.open({
    db,
    ledgerKeys,
    genesis: genesisFrom(v),
    verifyThreads: intOpt(v['verify-threads'], 'verify-threads', Math.min(availableParallelism(), 4), 0, 16),
    gatherMs: intOpt(v['gather-ms'], 'gather-ms', 0, 0, 1000),
    commitWindowMs: intOpt(v['commit-window-ms'], 'commit-window-ms', 0, 0, 1000),
    expiryIntervalMs: cmd === 'serve' ? 1000 : 0,
    snapshotEvery: intOpt(v['snapshot-every'], 'snapshot-every', 100_000, 0, 1_000_000_000),
    log: (m) => console.error(m),
  });
  if (cmd === 'serve') {
    const s = ledger.startup;
    console.error(`ledger: started in ${s.ms} ms (${s.snapshotSeq !== undefined ? `snapshot at seq ${s.snapshotSeq} + ` : 'full replay, '}${s.replayed} journal entries replayed)`);
  }
  const info = await ledger.ledgerInfo();
  if (cmd !== 'serve') {
    console.log(
      JSON.stringify({ ledgerId: info.ledgerId.toString('hex'), ledgerPublicKey: info.ledgerPublicKey.toString('hex'), height: info.height, supply: info.supply.toString(), escrow: info.escrow.toString(), openChannels: info.openChannels }),
    );
    await ledger.close();
    return 0;
  }
  const srv = createLedgerServer({ ledger, host: v.host ?? '127.0.0.1', port: intOpt(v.port, 'port', 7700, 0, 65535), opsPerKeyPerSec: intOpt(v.rate, 'rate', 1000, 1, 1_000_000) });
  const url = await srv.listen();
  console.log(`ledger ${info.ledgerId.toString('hex')} listening on ${url}`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await srv.close();
  await ledger.close();
  return 0;
}

async function readPassphrase(prompt: string, confirm = false): Promise<string> {
  const env = process.env.BITORRENT_PASSPHRASE;
  if (env !== undefined) return env;
  if (!process.stdin.isTTY) throw new Error('no passphrase: set BITORRENT_PASSPHRASE or run in a terminal');
  const ask = (q: string) =>
    new Promise<string>((resolve) => {
      let muted = false;
      const out = new Writable({
        write(chunk, _enc, cb) {
          if (!muted) process.stderr.write(chunk);
          cb();
        },
      });
      const rl = createInterface({ input: process.stdin, output: out, terminal: true });
      rl.question(q, (a) => {
        rl.close();
        process.stderr.write('\n');
        resolve(a);
      });
      muted = true;
    });
  const p = await ask(prompt);
  if (confirm && (await ask('repeat passphrase: ')) !== p) throw new Error('passphrases differ');
  return p;
}

export async function runWalletCli(argv: string[]): Promise<number | void> {
  const { values: v, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      keystore: { type: 'string' },
      ledger: { type: 'string' },
      'op-id': { type: 'string' },
      limit: { type: 'string' },
      force: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [cmd, ...args] = positionals;
  if (v.help || !cmd) {
    console.log(WALLET_HELP);
    return cmd || v.help ? 0 : 2;
  }
  const path = v.keystore ?? defaultKeystorePath();
  const out = (human: string, json: unknown) => console.log(v.json ? JSON.stringify(json) : human);
  const unlock = async (): Promise<KeyPair> => {
    const ks = readKeystore(path);
    return decryptKeystore(ks, await readPassphrase(`passphrase for ${path}: `));
  };
  const myAddress = (): Buffer => fromHex(readKeystore(path).publicKey, 32, 'publicKey');
  const client = () => new LedgerClient(v.ledger ?? process.env.BITORRENT_LEDGER ?? 'http://127.0.0.1:7700');

  if (cmd === 'create') {
    if (existsSync(path) && !v.force) throw new Error(`a wallet already exists at ${path} (use --force to replace it)`);
    const pass = await readPassphrase('new passphrase: ', true);
    const kp = generateKeyPair();
    writeKeystore(path, encryptKeystore(kp, pass));
    out(`created wallet ${path}\naddress ${kp.publicKey.toString('hex')}`, { keystore: path, address: kp.publicKey.toString('hex') });
    return 0;
  }
  if (cmd === 'address') {
    const a = myAddress().toString('hex');
    out(a, { address: a });
    return 0;
  }
  if (!['balance', 'faucet', 'send', 'channels', 'history'].includes(cmd)) {
    console.error(`bitorrent wallet: unknown command '${cmd}'\n\n${WALLET_HELP}`);
    return 2;
  }
  const c = client();
  try {
    if (cmd === 'balance') {
      const who = args[0] ? fromHex(args[0], 32, 'address') : myAddress();
      const a = await c.account(who);
      out(`${formatBtt(a.balance)} BTT`, { address: who.toString('hex'), balance: a.balance.toString(), btt: formatBtt(a.balance) });
    } else if (cmd === 'faucet') {
      const kp = await unlock();
      const r = await c.faucet({ keys: kp });
      out(`received ${formatBtt(r.amount)} BTT (journal seq ${r.seq})`, { seq: r.seq, amount: r.amount.toString() });
    } else if (cmd === 'send') {
      if (args.length !== 2) throw new Error('usage: bitorrent wallet send ADDRESS AMOUNT');
      const to = fromHex(args[0], 32, 'address');
      const amount = parseBtt(args[1]!);
      const opId = v['op-id'] ? fromHex(v['op-id'], 16, '--op-id') : undefined;
      const kp = await unlock();
      const r = await c.transfer({ fromKeys: kp, to, amount, opId });
      out(`sent ${formatBtt(amount)} BTT to ${args[0]} (journal seq ${r.seq}${r.duplicate ? ', already applied' : ''}, op ${r.opId.toString('hex')})`, {
        seq: r.seq,
        opId: r.opId.toString('hex'),
        duplicate: !!r.duplicate,
      });
    } else if (cmd === 'channels') {
      const me = myAddress();
      const list = await c.channels(me);
      const rows = list.map((ch) => ({
        id: ch.id.toString('hex'),
        role: ch.requester.equals(me) ? 'requester' : 'provider',
        peer: (ch.requester.equals(me) ? ch.provider : ch.requester).toString('hex'),
        deposit: ch.deposit.toString(),
        settled: ch.settled.toString(),
        status: ch.status,
        expiresAt: new Date(ch.expiresAt).toISOString(),
      }));
      out(rows.length ? rows.map((r) => `${r.id.slice(0, 16)} ${r.role.padEnd(9)} ${r.status.padEnd(7)} deposit ${formatBtt(BigInt(r.deposit))} settled ${formatBtt(BigInt(r.settled))} expires ${r.expiresAt}`).join('\n') : '(no channels)', { channels: rows });
    } else {
      const me = myAddress();
      const h = await c.history(me, { limit: intOpt(v.limit, 'limit', 20, 1, 1000) });
      const rows = h.map((e) => ({
        seq: e.seq,
        time: new Date(e.time).toISOString(),
        kind: e.kind,
        ...(e.amount !== undefined ? { amount: e.amount.toString() } : {}),
        ...(e.to ? { to: e.to.toString('hex') } : {}),
        ...(e.signer ? { from: e.signer.toString('hex') } : {}),
        ...(e.channelId ? { channelId: e.channelId.toString('hex') } : {}),
        ...(e.cumulative !== undefined ? { cumulative: e.cumulative.toString() } : {}),
      }));
      out(rows.map((r) => `${String(r.seq).padStart(8)} ${r.time} ${r.kind.padEnd(8)} ${r.amount !== undefined ? formatBtt(BigInt(r.amount)) + ' BTT' : ''}`).join('\n') || '(no history)', { history: rows });
    }
    return 0;
  } catch (e) {
    if (e instanceof LedgerError) throw new Error(`${e.code}: ${e.message}`);
    if ((e as NodeJS.ErrnoException).code === 'ECONNREFUSED') throw new Error('cannot reach the ledger (is `bitorrent ledger serve` running? set --ledger URL)');
    throw e;
  } finally {
    c.close();
  }
}
