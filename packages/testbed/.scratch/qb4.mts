import { startQbittorrent, stopAll } from '../src/index.ts';
const qb = await startQbittorrent();
const p = JSON.parse(await qb.api('/app/preferences'));
for (const k of ['encryption', 'listen_port', 'current_interface_name', 'current_interface_address', 'bittorrent_protocol', 'enable_multi_connections_from_same_ip', 'dht', 'pex', 'lsd', 'ip_filter_enabled', 'announce_ip', 'connection_speed', 'max_connec', 'max_connec_per_torrent', 'anonymous_mode', 'upnp', 'random_port', 'block_peers_on_privileged_ports', 'ssrf_mitigation', 'enable_embedded_tracker']) console.log(k, p[k]);
const out = await import('node:child_process');
console.log(out.execSync(`ss -tlnp | grep ${qb.peerPort} || true`).toString());
await stopAll();
