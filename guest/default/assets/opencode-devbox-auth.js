// OpenCode plugin written by devbox-auth: the "databricks" provider's credential, fetched at
// request time so that no token in a config file goes stale while OpenCode runs.
// OpenCode calls an auth loader only for a provider with an entry in
// ~/.local/share/opencode/auth.json; devbox-auth writes one whose key is a placeholder, never
// sent. This loader's fetch asks `devbox-auth token` for the current token before every request
// (from the state file: about a millisecond, no network when nothing is due). On a 401 or 403
// it asks once more with `--rejected` — devbox-auth then checks the token with the workspace
// and, if the workspace refuses it too (revoked behind its back), rotates at once — and retries
// once. It never logs or prints the token. The command runs asynchronously (a rotation never
// freezes OpenCode) and is killed with SIGKILL after 20 s, however it treats SIGTERM; `--timeout
// 12` keeps a rotation, and the 3 s check before it, inside that.
import { execFile } from "node:child_process"

const BINARY = __DEVBOX_AUTH_BINARY__
const HOME = __DEVBOX_AUTH_HOME__

function currentToken(...flags) {
  return new Promise((resolve, reject) => {
    const args = ["token", "--timeout", "12", "--home", HOME, ...flags]
    const options = { encoding: "utf8", timeout: 20000, killSignal: "SIGKILL" }
    const child = execFile(BINARY, args, options, (error, stdout) => {
      // The error names the command and its status, never its output.
      if (error) reject(new Error(`devbox-auth token failed (${error.code ?? error.signal ?? "error"})`))
      else resolve(stdout.trim())
    })
    child.stdin?.end()
  })
}

export default async function DevboxAuth() {
  return {
    auth: {
      provider: "databricks",
      loader: async () => ({
        apiKey: "placeholder-the-devbox-auth-plugin-sends-the-token",
        async fetch(url, init = {}) {
          const send = async (...flags) => {
            const headers = new Headers(init.headers)
            headers.set("Authorization", `Bearer ${await currentToken(...flags)}`)
            return fetch(url, { ...init, headers })
          }
          const first = await send()
          if (first.status !== 401 && first.status !== 403) return first
          return send("--rejected")
        },
      }),
      methods: [{ type: "api", label: "Databricks (the app's credential, from devbox-auth)" }],
    },
  }
}
