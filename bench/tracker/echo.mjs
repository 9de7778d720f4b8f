// Bare Node UDP "tracker" for the floor measurement in bench/tracker/floor.ts: answers a BEP 15 connect with 16
// bytes and anything else with a 320-byte announce-shaped reply (action 1, the request's transaction id), so
// the C generator counts it like a real tracker. No tracker logic: Node's receive + send cost only.
// usage: node echo.mjs [lookup|plain]   prints {"udp_port":N}
import dgram from 'node:dgram';

const mode = process.argv[2] ?? 'lookup';
const opts = { type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 };
if (mode === 'lookup') opts.lookup = (a, _o, cb) => cb(null, a, 4);
const sock = dgram.createSocket(opts);
const out = Buffer.alloc(320);
sock.on('message', (msg, r) => {
  if (msg.length < 16) return;
  const action = msg.readUInt32BE(8);
  out.writeUInt32BE(action === 0 ? 0 : 1, 0);
  out[4] = msg[12]; out[5] = msg[13]; out[6] = msg[14]; out[7] = msg[15];
  sock.send(action === 0 ? out.subarray(0, 16) : out, r.port, r.address);
});
sock.bind(0, '127.0.0.1', () => console.log(JSON.stringify({ udp_port: sock.address().port })));
