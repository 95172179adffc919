// An independent Server List Ping peer: the npm package minecraft-protocol's
// server. Prints "listening <port>" once ready. Players online/max and the
// version come from the command line so tests can change what it reports.
// A player who logs in is sent the join game packet.
// usage: node slp-server.js <online> <max> [version]
const mc = require('minecraft-protocol');

const online = parseInt(process.argv[2] || '0', 10);
const max = parseInt(process.argv[3] || '20', 10);
const version = process.argv[4] || '1.20.4';

const server = mc.createServer({
  'online-mode': false,
  // SLP_HOST: where real pods reach it (the real node's host address).
  host: process.env.SLP_HOST || '127.0.0.1',
  port: 0,
  version,
  motd: 'craftplane test peer',
  maxPlayers: max,
  beforePing: (response) => {
    response.players.online = online;
    response.players.max = max;
    response.players.sample = [];
    return response;
  },
});
// A player who logs in gets the join game packet (the client's "spawned"),
// so a test can tell a join that reached this server from one that did not.
server.on('playerJoin', (client) => {
  const mcData = require('minecraft-data')(server.version);
  client.write('login', {
    ...mcData.loginPacket,
    enforceSecureChat: false,
    entityId: client.id,
    isHardcore: false,
    gameMode: 0,
    previousGameMode: 1,
    hashedSeed: [0, 0],
    maxPlayers: server.maxPlayers,
    viewDistance: 10,
    reducedDebugInfo: false,
    enableRespawnScreen: true,
    isDebug: false,
    isFlat: false,
  });
  console.error(`joined ${client.username}`);
});
server.on('listening', () => {
  console.log(`listening ${server.socketServer.address().port}`);
});
server.on('error', (e) => {
  console.error(e);
  process.exit(1);
});
process.on('SIGTERM', () => process.exit(0));
