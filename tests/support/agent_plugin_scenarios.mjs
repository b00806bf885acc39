// What the rendered OpenCode plugin and Pi extension do with refused requests, in Node against
// a stand-in workspace on 127.0.0.1 and a stand-in `devbox-auth token`. Run by
// tests/assistants.rs: node --input-type=module -e <this> <opencode|pi> <rendered file> <scenario>.
// The rendered file runs as written but for its BINARY (the stand-in) and, in "hangs", its
// 20 s kill (1 s). Pi's models.json (the run's) gets the stand-in workspace as its base URL
// for the scenario, and is put back as it was after it.
// Prints one JSON report: each answer's status (or "threw: <message>"), each request the
// workspace got as [path, bearer], each token-command run's flags, and whether a token command
// was still running once every request had settled.
import fs from "node:fs"
import http from "node:http"
import os from "node:os"
import path from "node:path"

const [kind, rendered, scenario] = process.argv.slice(1)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agent-plugin-"))

// The token command: logs its pid and flags, prints the token in `current`; `--rejected`
// first switches `current` to `renewed` (a rotation), unless the scenario makes it fail/hang.
const stateFile = path.join(dir, "state.json")
const runsFile = path.join(dir, "runs")
const setState = (s) => fs.writeFileSync(stateFile, JSON.stringify(s))
setState({ current: "old", renewed: "good" })
const binary = path.join(dir, "devbox-auth")
fs.writeFileSync(
  binary,
  `#!${process.execPath}
const fs = require("fs")
const flags = process.argv.slice(2).filter((a) => a === "--rejected")
fs.appendFileSync(${JSON.stringify(runsFile)}, JSON.stringify([process.pid, flags]) + "\\n")
const state = JSON.parse(fs.readFileSync(${JSON.stringify(stateFile)}, "utf8"))
const scenario = ${JSON.stringify(scenario)}
if (flags.length && scenario === "hangs") { process.on("SIGTERM", () => {}); setInterval(() => {}, 1000) }
else if (flags.length && scenario === "fails") process.exit(3)
else if (scenario === "garbage") process.stdout.write("SECRET-TOKEN-123\\nsecond line\\n")
else {
  if (flags.length) { state.current = state.renewed; fs.writeFileSync(${JSON.stringify(stateFile)}, JSON.stringify(state)) }
  process.stdout.write(state.current + "\\n")
}
`,
  { mode: 0o755 },
)

// The workspace: takes only the bearers in `accepted` (none in "permission"); the answer to
// the first request in "together" waits until all three have arrived.
const accepted = new Set(scenario === "permission" ? [] : ["good", "newer"])
const got = []
const server = http.createServer((req, res) => {
  const bearer = req.headers.authorization ?? ""
  got.push([req.url, bearer])
  req.resume().on("end", () => {
    const ok = accepted.has(bearer.replace(/^Bearer /, ""))
    res.writeHead(ok ? 200 : 403, { "content-type": "application/json" })
    res.end(JSON.stringify(ok ? { ok } : { error_code: "PERMISSION_DENIED", message: "Invalid Token" }))
  })
})
await new Promise((r) => server.listen(0, "127.0.0.1", r))
const base = `http://127.0.0.1:${server.address().port}/serving-endpoints`

let source = fs.readFileSync(rendered, "utf8").replace(/^const BINARY = .*$/m, `const BINARY = ${JSON.stringify(binary)}`)
if (scenario === "hangs") source = source.replace("timeout: 20000", "timeout: 1000")
const module = path.join(dir, "module.mjs")
fs.writeFileSync(module, source)
const loaded = await import(module)

let request
if (kind === "opencode") {
  const hooks = await loaded.default({})
  const { fetch: send } = await hooks.auth.loader()
  request = (url, body) => send(url, { method: "POST", body, duplex: "half" })
} else {
  const models = source.match(/^const MODELS = (.*)$/m)[1]
  const file = JSON.parse(models)
  const written = fs.readFileSync(file, "utf8")
  process.on("exit", () => fs.writeFileSync(file, written))
  const config = JSON.parse(written)
  config.providers.databricks.baseUrl = base
  if (scenario === "foreign") config.providers.mine = { baseUrl: base, apiKey: "users-own-pat" }
  if (scenario === "not-our-key") config.providers.databricks.apiKey = "a-relay-key"
  fs.writeFileSync(file, JSON.stringify(config))
  loaded.default()
  // As Pi sends: the bearer its `!command` printed (the current token), through globalThis.fetch.
  request = (url, body) => {
    const { current } = JSON.parse(fs.readFileSync(stateFile, "utf8"))
    return fetch(url, { method: "POST", headers: { authorization: `Bearer ${current}` }, body, duplex: "half" })
  }
}

const chat = `${base}/chat/completions`
const one = (url = chat, body = "{}") =>
  request(url, body).then(
    (answer) => answer.status,
    (error) => `threw: ${error.message}`,
  )
const statuses = []
if (scenario === "together") statuses.push(...(await Promise.all([one(), one(), one()])))
else if (scenario === "stream") statuses.push(await one(chat, new ReadableStream({ start: (c) => (c.enqueue(new TextEncoder().encode("{}")), c.close()) })))
else if (scenario === "outside") statuses.push(await one(`${base}-evil/chat/completions`))
else if (scenario === "permission") statuses.push(await one(), await one(), await one())
else if (scenario === "raced") {
  statuses.push(await one())
  // A rotation behind the client's back: the token it sends next is already the old one.
  setState({ current: "newer", renewed: "newer" })
  accepted.delete("good")
  const stale = kind === "pi" ? fetch(chat, { method: "POST", headers: { authorization: "Bearer good" }, body: "{}" }) : request(chat, "{}")
  statuses.push(await stale.then((a) => a.status))
} else statuses.push(await one())

const runs = fs.existsSync(runsFile) ? fs.readFileSync(runsFile, "utf8").trim().split("\n").map((l) => JSON.parse(l)) : []
const alive = runs.some(([pid]) => {
  try {
    process.kill(pid, 0)
    process.kill(pid, "SIGKILL")
    return true
  } catch {
    return false
  }
})
server.close()
fs.rmSync(dir, { recursive: true, force: true })
console.log(JSON.stringify({ statuses, got, runs: runs.map(([, flags]) => flags), alive }))
process.exit(0)
