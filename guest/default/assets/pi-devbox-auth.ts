// Pi extension written by devbox-auth: a request Pi sends with the token `devbox-auth token`
// printed, refused with 401 or 403, is sent once more with a renewed token, so a token revoked
// behind devbox-auth's back heals within one request. Pi runs the `apiKey` command in
// ~/.pi/agent/models.json before every request, but does not send a refused request again.
//
// It acts only while the "databricks" provider's key is exactly devbox-auth's command (without
// `watch`; under `watch` the credential relay heals refused requests itself), only for a
// request under that provider's base URL and under no other provider's (another provider at
// the workspace sends its own key, which must not be swapped for the app's), whose body can be
// sent twice, and only on a 401 or 403. It then sends the request once more if a renewed token
// differs from the one refused (see `renewal`). Pi's model clients send with the process's
// fetch, which this wraps; any other request passes untouched. It never logs or prints a token.
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"

const BINARY = __DEVBOX_AUTH_BINARY__
const HOME = __DEVBOX_AUTH_HOME__
const MODELS = __DEVBOX_AUTH_PI_MODELS__
const OUR_KEY = __DEVBOX_AUTH_PI_KEY__
const WRAPPED = Symbol.for("devbox-auth.pi.retried-fetch")

__DEVBOX_AUTH_TOKEN_COMMAND__

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

/** Whether models.json says `url` is for our provider, sent with our command's token. */
function ours(url) {
  try {
    const providers = Object.entries(JSON.parse(readFileSync(MODELS, "utf8")).providers ?? {})
    const isOurs = ([name, p]) => name === "databricks" && p?.apiKey === OUR_KEY
    const claims = ([, p]) => typeof p?.baseUrl === "string" && under(url, p.baseUrl)
    return providers.some((p) => isOurs(p) && claims(p)) && !providers.some((p) => !isOurs(p) && claims(p))
  } catch {
    return false
  }
}

export default function devboxAuth() {
  const send = globalThis.fetch
  if (typeof send !== "function" || send[WRAPPED]) return
  const renewed = renewal()
  const retried = async (input, init) => {
    const answer = await send(input, init)
    if (answer.status !== 401 && answer.status !== 403) return answer
    if (!resendable(input, init) || !ours(String(input))) return answer
    const sent = new Headers(init?.headers).get("authorization") ?? ""
    if (!sent.startsWith("Bearer ")) return answer
    const fresh = await renewed(sent.slice("Bearer ".length), init?.signal)
    if (!fresh) return answer
    await answer.body?.cancel().catch(() => {})
    const headers = new Headers(init?.headers)
    headers.set("authorization", `Bearer ${fresh}`)
    return send(input, { ...init, headers })
  }
  retried[WRAPPED] = true
  globalThis.fetch = retried
}
