// An independent RCON server: the npm package rcon-server. Prints
// "listening <port>" once ready and "command <body>" for every command it
// receives, answering each with "ok: <body>".
// usage: node rcon-server.js <port> <password>
const { RCONServer } = require('rcon-server');

const port = parseInt(process.argv[2], 10);
const password = process.argv[3] || 'password';
const server = new RCONServer({
  port,
  host: '127.0.0.1',
  password,
  clientLimit: 4,
  destroySocketOnLimitExceeded: true,
});
server.on('listening', ({ port }) => console.log(`listening ${port}`));
server.on('login', ({ successful }) => console.log(`login ${successful ? 'ok' : 'failed'}`));
server.on('commandRequest', (d) => {
  console.log(`command ${d.body}`);
  d.resolve(`ok: ${d.body}`);
});
server.connect();
