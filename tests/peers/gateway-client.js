// A real Java Edition client (the npm package minecraft-protocol) talking to
// the gateway at $GATEWAY_HOST (default 127.0.0.1):<port> while its handshake
// names <hostname>, as a player typing that address would (DNS pointed at
// the gateway).
// usage: node gateway-client.js <ping|login|join> <port> <hostname> [version] [username]
// Prints one JSON line: {"ping": <status response>} | {"joined": true} (join:
// the server sent the login/spawn packet) | {"kicked": <reason>} |
// {"error": <message>}. CLIENT_TIMEOUT_MS: give up after (default 10000).
const net = require('net');
const mc = require('minecraft-protocol');

const [mode, port, hostname, version = '1.20.4', username = 'Steve'] = process.argv.slice(2);
const gatewayHost = process.env.GATEWAY_HOST || '127.0.0.1';
const connect = (client) => {
  client.setSocket(net.connect(parseInt(port, 10), gatewayHost));
  client.emit('connect');
};
const done = (v) => {
  console.log(JSON.stringify(v));
  process.exit(0);
};
setTimeout(() => done({ error: 'timeout' }), parseInt(process.env.CLIENT_TIMEOUT_MS || '10000', 10));

if (mode === 'ping') {
  mc.ping({ host: hostname, port: 25565, version, connect, closeTimeout: 5000 }, (err, res) => {
    if (err) done({ error: String(err.message || err) });
    else done({ ping: res });
  });
} else {
  const c = mc.createClient({ host: hostname, port: 25565, version, username, auth: 'offline', connect });
  let joined = false;
  if (mode === 'join') c.on('login', () => { joined = true; setTimeout(() => c.end(), 500); });
  c.on('disconnect', (p) => done({ kicked: p.reason }));
  c.on('kick_disconnect', (p) => done({ kicked: p.reason }));
  c.on('end', (reason) => done(joined ? { joined: true } : { error: `ended: ${reason}` }));
  c.on('error', (e) => done({ error: String(e.message || e) }));
}
