// How the OpenCode plugin and the Pi extension run `devbox-auth token` (devbox-auth inlines
// this into both, after their imports; it needs `execFile` and `BINARY`/`HOME`).
// The command runs asynchronously (a rotation never freezes the client) and is killed with
// SIGKILL after 20 s, however it treats SIGTERM; `--timeout 12` keeps a rotation, and the 3 s
// check `--rejected` makes before it, inside that. Its output is never logged or put into an
// error: only a single printable word counts as a token.
const TOKEN_SHAPE = /^[\x21-\x7e]+$/
const RENEWAL_COOLDOWN_MS = 30000

/** `{ token }` as `devbox-auth token <flags>` printed it, or `{ failure }` saying how it ended. */
function runTokenCommand(...flags) {
  return new Promise((settle) => {
    const args = ["token", "--timeout", "12", "--home", HOME, ...flags]
    const options = { encoding: "utf8", timeout: 20000, killSignal: "SIGKILL" }
    const child = execFile(BINARY, args, options, (error, stdout) => {
      const token = String(stdout ?? "").trim()
      if (error) settle({ failure: `devbox-auth token failed (${error.code ?? error.signal ?? "error"})` })
      else if (!TOKEN_SHAPE.test(token)) settle({ failure: "devbox-auth token printed no token" })
      else settle({ token })
    })
    child.stdin?.end()
  })
}

/**
 * After a request sent with `refused` got 401 or 403: the token to send it once more with, or
 * null. `token --rejected` (the workspace is asked whether it still takes the served token, and
 * a refused one is rotated at once) runs at most once in 30 s, counted from its start, and
 * refusals that arrive while it runs share that run; otherwise the plain `token` runs (no
 * network when nothing is due) — a 403 for a missing permission comes back on every request —
 * which still hands a request that raced a rotation the new token. Null when the token is the
 * one refused, or when `signal` aborts the request first (the run goes on, shared).
 */
function renewal() {
  let running = null
  let lastRun = -Infinity
  return async (refused, signal) => {
    let ran
    if (running) ran = running
    else if (Date.now() - lastRun < RENEWAL_COOLDOWN_MS) ran = runTokenCommand()
    else {
      lastRun = Date.now()
      ran = running = runTokenCommand("--rejected").finally(() => {
        running = null
      })
    }
    const aborted = new Promise((settle) => {
      if (signal?.aborted) settle({})
      signal?.addEventListener?.("abort", () => settle({}), { once: true })
    })
    const { token } = await Promise.race([ran, aborted])
    return token && token !== refused ? token : null
  }
}

/** Whether a request can be sent a second time: a URL and a body that is text or absent. */
function resendable(input, init) {
  const body = init?.body
  return (typeof input === "string" || input instanceof URL) && (body == null || typeof body === "string")
}
