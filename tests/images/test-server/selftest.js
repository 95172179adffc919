#!/usr/bin/node
// Self-test of the TEST stand-in, as a plain host process on loopback only.
// usage: (npm ci once, then) node selftest.js   -> prints "N passed, M failed", exits 1 on any failure
'use strict'
const fs = require('fs')
const os = require('os')
const net = require('net')
const path = require('path')
const { spawn, spawnSync } = require('child_process')

const HERE = __dirname
const HOST = '127.0.0.1'
let passed = 0
let failed = 0
const check = (name, ok, detail = '') => {
  if (ok) { passed++; console.log(`ok   ${name}`) } else { failed++; console.log(`FAIL ${name}${detail ? ': ' + detail : ''}`) }
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const freePort = () => new Promise((resolve, reject) => {
  const s = net.createServer().listen(0, HOST, () => { const p = s.address().port; s.close(() => resolve(p)) }).on('error', reject)
})

async function main () {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'craftplane-test-server-'))
  fs.mkdirSync(path.join(data, 'plugins'))
  for (const f of ['LuckPerms.jar', 'Chunky.jar']) fs.writeFileSync(path.join(data, 'plugins', f), 'not a real jar')
  fs.writeFileSync(path.join(data, 'rcon-pass'), 's3cret-test\n')
  const port = await freePort()
  const rconPort = await freePort()
  const env = {
    ...process.env,
    DATA_DIR: data,
    EULA: 'TRUE',
    SERVER_IP: HOST, // loopback only
    SERVER_PORT: String(port),
    RCON_PORT: String(rconPort),
    RCON_PASSWORD_FILE: path.join(data, 'rcon-pass'),
    MEMORY: '1G',
    MOTD: 'selftest motd',
    MAX_PLAYERS: '7',
    CUSTOM_SERVER_PROPERTIES: 'custom1=value1\nspawn-protection=0'
  }
  delete env.RCON_PASSWORD

  // EULA not accepted -> exit 1 with itzg's message
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'craftplane-test-server-'))
  const noEula = spawnSync(process.execPath, [path.join(HERE, 'server.js')], { env: { ...env, EULA: '', DATA_DIR: path.join(scratch, 'a') }, encoding: 'utf8', timeout: 30000 })
  check('EULA unset: exit 1 with the EULA message', noEula.status === 1 && /Please accept the Minecraft EULA/.test(noEula.stdout), `status ${noEula.status}`)
  const badVersion = spawnSync(process.execPath, [path.join(HERE, 'server.js')], { env: { ...env, VERSION: '1.7.10', DATA_DIR: path.join(scratch, 'b') }, encoding: 'utf8', timeout: 30000 })
  check('unsupported VERSION: exit 1 with a message', badVersion.status === 1 && /not supported/.test(badVersion.stdout), `status ${badVersion.status}`)
  fs.rmSync(scratch, { recursive: true, force: true })

  const t0 = Date.now()
  const server = spawn(process.execPath, [path.join(HERE, 'server.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  server.stdout.on('data', (d) => { out += d; if (process.env.VERBOSE) process.stdout.write(d) })
  server.stderr.on('data', (d) => { out += d; process.stderr.write(d) })
  const exited = new Promise((resolve) => server.on('exit', (code, signal) => resolve({ code, signal })))
  const lines = () => out.split('\n')
  const until = async (re, ms) => { const end = Date.now() + ms; while (Date.now() < end) { if (re.test(out)) return true; await sleep(100) } return false }

  try {
    const done = await until(/Done \(\d+\.\d{3}s\)! For help, type "help"/, 15000)
    check('starts with "Done (X.XXXs)!" in < 15 s', done, `after ${Date.now() - t0} ms`)
    if (!done) throw new Error('server did not start:\n' + out)
    await until(/RCON running on/, 5000)
    check('plugins listed at start', /\[craftplane-test-server\] plugins: Chunky\.jar, LuckPerms\.jar/.test(out))
    check('MEMORY logged (no JVM)', /MEMORY=1G/.test(out))

    const props = fs.readFileSync(path.join(data, 'server.properties'), 'utf8')
    check('server.properties reflects env', [`server-port=${port}`, `rcon.port=${rconPort}`, 'motd=selftest motd', 'max-players=7',
      'online-mode=false', 'level-name=world', 'custom1=value1', 'spawn-protection=0', 'enable-rcon=true'].every((l) => props.split('\n').includes(l)), props)

    const health = spawnSync(path.join(HERE, 'bin', 'mc-health'), [], { env, encoding: 'utf8', timeout: 10000 })
    check('mc-health exits 0 with the status', health.status === 0 && new RegExp(`localhost:${port} : version=1\\.21\\.4 online=0 max=7 motd='selftest motd'`).test(health.stdout), `${health.status} ${health.stdout}${health.stderr}`)
    const healthDown = spawnSync(path.join(HERE, 'bin', 'mc-health'), [], { env: { ...env, SERVER_PORT: String(await freePort()) }, encoding: 'utf8', timeout: 10000 })
    check('mc-health exits 1 when nothing answers', healthDown.status === 1)

    // a real client joins
    const mc = require('minecraft-protocol')
    const client = mc.createClient({ host: HOST, port, username: 'alice', auth: 'offline', version: '1.21.4' })
    const chats = []
    client.on('error', (e) => console.log('client error:', e.message))
    for (const ev of ['system_chat', 'player_chat', 'profileless_chat']) client.on(ev, (p) => chats.push(JSON.stringify(p)))
    const joined = await Promise.race([new Promise((resolve) => client.once('login', () => resolve(true))), sleep(15000).then(() => false)])
    check('a real client (alice, offline) joins', joined)
    await until(/alice joined the game/, 5000)
    const pinged = await mc.ping({ host: HOST, port, version: '1.21.4' }).catch((e) => ({ error: e.message }))
    check('Server List Ping: the player sample names alice', !!pinged.players && (pinged.players.sample || []).some((p) => p.name === 'alice'), JSON.stringify(pinged.players || pinged))

    const rcon = (...args) => spawnSync(path.join(HERE, 'bin', 'rcon-cli'), args, { env, encoding: 'utf8', timeout: 20000 })
    const expect = [
      [['list'], /There are 1 of a max of 7 players online: alice/],
      [['save-off'], /Automatic saving is now disabled/],
      [['save-all', 'flush'], /Saved the game/],
      [['save-on'], /Automatic saving is now enabled/],
      [['say', 'hi'], /^\s*$/],
      [['whitelist', 'add', 'bob'], /Added bob to the whitelist/],
      [['op', 'bob'], /Made bob a server operator/]
    ]
    for (const [args, re] of expect) {
      const r = rcon(...args)
      check(`rcon-cli ${args.join(' ')}`, r.status === 0 && re.test(r.stdout), `${r.status} ${r.stdout}${r.stderr}`)
    }
    const unknown = rcon('frobnicate')
    check('unknown command answers "Unknown command"', unknown.status === 0 && /Unknown command/.test(unknown.stdout))
    const badPass = rcon('--password', 'wrong', 'list')
    check('rcon-cli exits 1 on a bad password', badPass.status === 1)
    const flags = spawnSync(path.join(HERE, 'bin', 'rcon-cli'), ['--port', String(rconPort), '--password', 's3cret-test', 'whitelist', 'list'], { env: { PATH: process.env.PATH }, encoding: 'utf8', timeout: 20000 })
    check('rcon-cli --port/--password flags', flags.status === 0 && /bob/.test(flags.stdout), `${flags.status} ${flags.stdout}${flags.stderr}`)

    await sleep(500) // spawnSync blocked this loop: let the server's stdout catch up
    const order = ['list', 'save-off', 'save-all flush', 'save-on', 'say hi', 'whitelist add bob', 'op bob'].map((c) => `[RCON] ${c}`)
    const rconLines = lines().filter((l) => l.includes('[RCON] ')).map((l) => l.slice(l.indexOf('[RCON] ')))
    check('commands logged as [RCON] <command>, in order', order.every((c, i) => rconLines[i] === c), rconLines.join(' | '))
    check('say logged as [Server] hi', lines().some((l) => l.endsWith('[Server] hi')))
    check('say reached the player in chat', chats.some((c) => c.includes('[Server] hi')), chats.join(' | '))

    const world = path.join(data, 'world')
    const save = JSON.parse(fs.readFileSync(path.join(world, 'craftplane-save.json'), 'utf8'))
    check('save-all wrote craftplane-save.json', save.saves >= 1 && save.flush === true && !!save.time, JSON.stringify(save))
    check('anvil world on disk (level.dat, region/*.mca)', fs.existsSync(path.join(world, 'level.dat')) && fs.readdirSync(path.join(world, 'region')).some((f) => f.endsWith('.mca')))
    check('playerdata for alice saved', fs.existsSync(path.join(world, 'playerdata')) && fs.readdirSync(path.join(world, 'playerdata')).length > 0)
    const wl = JSON.parse(fs.readFileSync(path.join(data, 'whitelist.json'), 'utf8'))
    const ops = JSON.parse(fs.readFileSync(path.join(data, 'ops.json'), 'utf8'))
    check('whitelist.json has bob', wl.some((e) => e.name === 'bob' && e.uuid))
    check('ops.json has bob (level 4)', ops.some((e) => e.name === 'bob' && e.level === 4))

    // SIGTERM: graceful stop, exit 0
    const before = out.length
    server.kill('SIGTERM')
    const res = await Promise.race([exited, sleep(30000).then(() => null)])
    const tail = out.slice(before)
    check('SIGTERM: exit code 0', res && res.code === 0, JSON.stringify(res))
    check('SIGTERM: logs Stopping the server, Saved the game, Server stopped (in order)',
      /Stopping the server[\s\S]*Saved the game[\s\S]*Server stopped/.test(tail), tail)
    const save2 = JSON.parse(fs.readFileSync(path.join(world, 'craftplane-save.json'), 'utf8'))
    check('stop saved again', save2.saves === save.saves + 1, JSON.stringify(save2))
    client.end()
  } finally {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL')
    if (failed && !process.env.VERBOSE) console.log('--- server output ---\n' + out)
    fs.rmSync(data, { recursive: true, force: true })
  }
}

// second run: WHITELIST refuses others at login; RCON `stop` with STOP_SERVER_ANNOUNCE_DELAY
async function whitelistAndAnnounce () {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'craftplane-test-server-'))
  const port = await freePort()
  const rconPort = await freePort()
  const env = { ...process.env, DATA_DIR: data, EULA: 'true', SERVER_IP: HOST, SERVER_PORT: String(port), RCON_PORT: String(rconPort), RCON_PASSWORD: 'pw2', WHITELIST: 'alice', STOP_SERVER_ANNOUNCE_DELAY: '1' }
  delete env.RCON_PASSWORD_FILE
  const server = spawn(process.execPath, [path.join(HERE, 'server.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  server.stdout.on('data', (d) => { out += d })
  server.stderr.on('data', (d) => { out += d })
  const exited = new Promise((resolve) => server.on('exit', (code) => resolve(code)))
  try {
    for (let i = 0; i < 150 && !/RCON running on/.test(out); i++) await sleep(100)
    const mc = require('minecraft-protocol')
    const client = mc.createClient({ host: HOST, port, username: 'mallory', auth: 'offline', version: '1.21.4' })
    client.on('error', () => {})
    const kicked = await Promise.race([
      new Promise((resolve) => client.on('kick_disconnect', (p) => resolve(JSON.stringify(p).includes('not white-listed')))),
      new Promise((resolve) => client.on('login', () => resolve(false))),
      sleep(10000).then(() => false)])
    check('WHITELIST: an unlisted player is refused at login', kicked)
    client.end()
    const r = spawnSync(path.join(HERE, 'bin', 'rcon-cli'), ['stop'], { env, encoding: 'utf8', timeout: 20000 })
    check('rcon-cli stop answers', r.status === 0 && /Stopping the server/.test(r.stdout), `${r.status} ${r.stdout}${r.stderr}`)
    const code = await Promise.race([exited, sleep(20000).then(() => null)])
    check('RCON stop: exit 0 after the announcement, save and "Server stopped"', code === 0 &&
      /Server shutting down in 1 seconds[\s\S]*Saved the game[\s\S]*Server stopped/.test(out), `${code}\n${out}`)
  } finally {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL')
    fs.rmSync(data, { recursive: true, force: true })
  }
}

main().then(whitelistAndAnnounce).catch((e) => { failed++; console.log(`FAIL ${e.stack || e}`) }).finally(() => {
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(failed ? 1 : 0)
})
