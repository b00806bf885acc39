// Pi extension written by devbox-auth: a request Pi sends with the token `devbox-auth token`
// printed, refused with 401 or 403, is sent once more with a renewed token, so a token revoked
// behind devbox-auth's back heals within one request. Pi runs the `apiKey` command in
// ~/.pi/agent/models.json before every request, but does not send a refused request again.
//
// It acts only while the "databricks" provider's key is that command (without `watch`; under
// `watch` the credential relay heals refused requests itself), only for a request to that
// provider's base URL whose body can be sent twice, and only on a 401 or 403. It then runs
// `devbox-auth token --rejected` (which asks the workspace whether it still takes the served
// token, and rotates at once if not) and sends the request once more if that printed a token
// other than the one refused. The command runs at most once in 30 s (a 403 for a missing
// permission comes back on every request), asynchronously, and is killed with SIGKILL after
// 20 s. Pi's model clients send with the process's fetch, which this wraps; any other request
// passes untouched. It never logs or prints a token.
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"

const BINARY = __DEVBOX_AUTH_BINARY__
const HOME = __DEVBOX_AUTH_HOME__
const MODELS = __DEVBOX_AUTH_PI_MODELS__
const WRAPPED = Symbol.for("devbox-auth.pi.retried-fetch")
const COOLDOWN_MS = 30000

/** The "databricks" provider's {baseUrl, apiKey} in models.json now, or null. */
function ourProvider() {
  try {
    const provider = JSON.parse(readFileSync(MODELS, "utf8")).providers?.databricks
    const ok = typeof provider?.baseUrl === "string" && typeof provider?.apiKey === "string"
    return ok ? provider : null
  } catch {
    return null
  }
}

/** Whether `url` is under `base` (same origin, path below it). */
function under(url, base) {
  try {
    const [u, b] = [new URL(url), new URL(base)]
    const path = b.pathname.endsWith("/") ? b.pathname : `${b.pathname}/`
    return u.origin === b.origin && (u.pathname === b.pathname || u.pathname.startsWith(path))
  } catch {
    return false
  }
}

/** What `devbox-auth token --rejected` prints, or null. */
function renewedToken() {
  return new Promise((resolve) => {
    const args = ["token", "--rejected", "--timeout", "12", "--home", HOME]
    const options = { encoding: "utf8", timeout: 20000, killSignal: "SIGKILL" }
    const child = execFile(BINARY, args, options, (error, stdout) => resolve(error ? null : stdout.trim() || null))
    child.stdin?.end()
  })
}

export default function devboxAuth() {
  const send = globalThis.fetch
  if (typeof send !== "function" || send[WRAPPED]) return
  let lastRun = -Infinity
  let running = null
  const retried = async (input, init) => {
    const answer = await send(input, init)
    if (answer.status !== 401 && answer.status !== 403) return answer
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : null
    const body = init?.body
    if (!url || (body != null && typeof body !== "string")) return answer
    const ours = ourProvider()
    if (!ours || !ours.apiKey.startsWith("!") || !under(url, ours.baseUrl)) return answer
    if (!running) {
      if (Date.now() - lastRun < COOLDOWN_MS) return answer
      running = renewedToken().finally(() => {
        running = null
        lastRun = Date.now()
      })
    }
    const fresh = await running
    const sent = new Headers(init?.headers).get("authorization")
    if (!fresh || sent === `Bearer ${fresh}`) return answer
    try {
      await answer.body?.cancel()
    } catch {
      // The refused answer is dropped either way.
    }
    const headers = new Headers(init?.headers)
    headers.set("authorization", `Bearer ${fresh}`)
    return send(input, { ...init, headers })
  }
  retried[WRAPPED] = true
  globalThis.fetch = retried
}
