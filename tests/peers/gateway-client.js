// A real Java Edition client (the npm package minecraft-protocol) talking to
// the gateway at 127.0.0.1:<port> while its handshake names <hostname>, as a
// player typing that address would (DNS pointed at the gateway).
// usage: node gateway-client.js <ping|login> <port> <hostname> [version]
// Prints one JSON line: {"ping": <status response>} | {"kicked": <reason>} |
// {"error": <message>}.
const net = require('net');
const mc = require('minecraft-protocol');

const [mode, port, hostname, version = '1.20.4'] = process.argv.slice(2);
const connect = (client) => {
  client.setSocket(net.connect(parseInt(port, 10), '127.0.0.1'));
  client.emit('connect');
};
const done = (v) => {
  console.log(JSON.stringify(v));
  process.exit(0);
};
setTimeout(() => done({ error: 'timeout' }), 10000);

if (mode === 'ping') {
  mc.ping({ host: hostname, port: 25565, version, connect, closeTimeout: 5000 }, (err, res) => {
    if (err) done({ error: String(err.message || err) });
    else done({ ping: res });
  });
} else {
  const c = mc.createClient({ host: hostname, port: 25565, version, username: 'Steve', auth: 'offline', connect });
  c.on('disconnect', (p) => done({ kicked: p.reason }));
  c.on('kick_disconnect', (p) => done({ kicked: p.reason }));
  c.on('end', (reason) => done({ error: `ended: ${reason}` }));
  c.on('error', (e) => done({ error: String(e.message || e) }));
}
