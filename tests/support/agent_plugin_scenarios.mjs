// What the rendered OpenCode plugin and Pi extension do with refused requests, in Node against
// a stand-in workspace on 127.0.0.1 and a stand-in `devbox-auth token`. Run by
// tests/assistants.rs: node --input-type=module -e <this> <opencode|pi> <rendered file> <scenario>.
// The rendered file runs as written but for its BINARY (the stand-in) and, in "hangs", its
// 20 s kill (1 s; not in "aborted", where the request must settle while the command hangs).
// Pi's models.json (the run's) gets the stand-in workspace as its base URL for the scenario,
// and is put back as it was after it.
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
// Replaced whole (a temp file renamed over it), as devbox-auth replaces its state: a run that
// reads it while another writes never sees half a file.
const setState = (s) => {
  fs.writeFileSync(`${stateFile}.new`, JSON.stringify(s))
  fs.renameSync(`${stateFile}.new`, stateFile)
}
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
if (flags.length && (scenario === "hangs" || scenario === "aborted")) { process.on("SIGTERM", () => {}); setInterval(() => {}, 1000) }
else if (flags.length && scenario === "fails") process.exit(3)
else if (scenario === "garbage") process.stdout.write("SECRET-TOKEN-123\\nsecond line\\n")
else {
  if (flags.length) {
    state.current = state.renewed
    fs.writeFileSync(${JSON.stringify(stateFile)} + "." + process.pid, JSON.stringify(state))
    fs.renameSync(${JSON.stringify(stateFile)} + "." + process.pid, ${JSON.stringify(stateFile)})
  }
  process.stdout.write(state.current + "\\n")
}
`,
  { mode: 0o755 },
)

// The workspace: takes only the bearers in `accepted` (none in "permission"). In "together" it
// answers none of the three first requests before all three have arrived, so they are refused
// together however the machine schedules the token commands before them.
const accepted = new Set(scenario === "permission" ? [] : ["good", "newer"])
const got = []
let together = []
const server = http.createServer((req, res) => {
  const bearer = req.headers.authorization ?? ""
  got.push([req.url, bearer])
  req.resume().on("end", () => {
    const ok = accepted.has(bearer.replace(/^Bearer /, ""))
    const answer = () => {
      res.writeHead(ok ? 200 : 403, { "content-type": "application/json" })
      res.end(JSON.stringify(ok ? { ok } : { error_code: "PERMISSION_DENIED", message: "Invalid Token" }))
    }
    if (scenario !== "together" || together === null) return answer()
    together.push(answer)
    if (together.length === 3) {
      together.forEach((send) => send())
      together = null
    }
  })
})
await new Promise((r) => server.listen(0, "127.0.0.1", r))
const base = `http://127.0.0.1:${server.address().port}/serving-endpoints`
// The same workspace at another origin (another port), for "other-origin".
const elsewhere = http.createServer((req, res) => server.emit("request", req, res))
await new Promise((r) => elsewhere.listen(0, "127.0.0.1", r))

/** `text` with `from` replaced by `to`; it must be there (else the scenario would test the real thing). */
function rewrite(text, from, to) {
  const changed = text.replace(from, to)
  if (changed === text) throw new Error(`the rendered file has no ${from}`)
  return changed
}
let source = rewrite(fs.readFileSync(rendered, "utf8"), /^const BINARY = .*$/m, `const BINARY = ${JSON.stringify(binary)}`)
if (scenario === "hangs") source = rewrite(source, "timeout: 20000", "timeout: 1000")
const module = path.join(dir, "module.mjs")
fs.writeFileSync(module, source)
const loaded = await import(module)

let request
if (kind === "opencode") {
  const hooks = await loaded.default({})
  const { fetch: send } = await hooks.auth.loader()
  request = (url, body, signal) => send(url, { method: "POST", body, duplex: "half", signal })
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
  request = (url, body, signal) => {
    const { current } = JSON.parse(fs.readFileSync(stateFile, "utf8"))
    const headers = scenario === "no-bearer" ? {} : { authorization: `Bearer ${current}` }
    return fetch(url, { method: "POST", headers, body, duplex: "half", signal })
  }
}

const chat = `${base}/chat/completions`
const one = (url = chat, body = "{}", signal = undefined) =>
  request(url, body, signal).then(
    (answer) => answer.status,
    (error) => `threw: ${error.message}`,
  )
const statuses = []
if (scenario === "together") statuses.push(...(await Promise.all([one(), one(), one()])))
else if (scenario === "stream") statuses.push(await one(chat, new ReadableStream({ start: (c) => (c.enqueue(new TextEncoder().encode("{}")), c.close()) })))
else if (scenario === "outside") statuses.push(await one(`${base}-evil/chat/completions`))
else if (scenario === "other-origin") statuses.push(await one(chat.replace(/:\d+\//, `:${elsewhere.address().port}/`)))
else if (scenario === "aborted") {
  // The user gives up (Esc) while the renewal hangs: the refused answer comes back then.
  const giveUp = new AbortController()
  setTimeout(() => giveUp.abort(), 500)
  statuses.push(await one(chat, "{}", giveUp.signal))
} else if (scenario === "request-input") statuses.push(await one(new Request(chat, { method: "POST", body: "{}" })))
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
elsewhere.close()
fs.rmSync(dir, { recursive: true, force: true })
console.log(JSON.stringify({ statuses, got, runs: runs.map(([, flags]) => flags), alive }))
process.exit(0)
