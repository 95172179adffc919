// Captures the first bytes a real client (the npm package minecraft-protocol)
// sends: a status ping and a login, for a few protocol versions. Writes
// <kind>-<version>.bin beside this script; the gateway's unit tests parse
// them (src/gateway/protocol.rs, tests `captured_*`).
//
// Re-capture (the npm peers of `cargo xtask tools`):
//   NODE_PATH=~/.cache/craftplane/npm/node_modules node src/gateway/testdata/capture.js
//
// The client connects to a local listener that records what arrives in
// its first 500 ms and then closes; the handshake names HOST (mixed case,
// trailing dot: what a player may type) and port 25565.
const fs = require('fs');
const net = require('net');
const path = require('path');
const mc = require('minecraft-protocol');

const HOST = 'Survival.Acme.Play.Example.';
const VERSIONS = ['1.8.8', '1.12.2', '1.20.4', '1.21.4'];

function capture(start) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const server = net.createServer((sock) => {
      sock.on('data', (d) => chunks.push(d));
      sock.on('error', () => {});
      setTimeout(() => {
        sock.destroy();
        server.close();
        resolve(Buffer.concat(chunks));
      }, 500);
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => start(server.address().port));
  });
}

// Connects the client's socket to the local listener whatever its host says.
const connectTo = (port) => (client) => {
  client.setSocket(net.connect(port, '127.0.0.1'));
  client.emit('connect');
};

async function main() {
  for (const version of VERSIONS) {
    const status = await capture((port) => {
      mc.ping({ host: HOST, port: 25565, version, connect: connectTo(port), closeTimeout: 2000 }, () => {});
    });
    const login = await capture((port) => {
      const c = mc.createClient({
        host: HOST, port: 25565, version, username: 'Steve', auth: 'offline', connect: connectTo(port),
      });
      c.on('error', () => {});
    });
    for (const [kind, bytes] of [['status', status], ['login', login]]) {
      const file = path.join(__dirname, `${kind}-${version}.bin`);
      fs.writeFileSync(file, bytes);
      console.log(`${file}: ${bytes.length} bytes ${bytes.toString('hex')}`);
    }
  }
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
