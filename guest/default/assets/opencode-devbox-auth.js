// OpenCode plugin written by devbox-auth: the "databricks" provider's credential, fetched at
// request time so that no token in a config file goes stale while OpenCode runs.
// OpenCode calls an auth loader only for a provider with an entry in
// ~/.local/share/opencode/auth.json; devbox-auth writes one whose key is a placeholder, never
// sent. This loader's fetch asks `devbox-auth token` for the current token before every request
// (from the state file: about a millisecond, no network when nothing is due) and, on a 401 or
// 403, asks once more and retries once: a request that raced a rotation then goes through.
// It never logs or prints the token.
import { execFileSync } from "node:child_process"

const BINARY = __DEVBOX_AUTH_BINARY__
const HOME = __DEVBOX_AUTH_HOME__

function currentToken() {
  return execFileSync(BINARY, ["token", "--home", HOME], {
    encoding: "utf8",
    timeout: 10000,
    stdio: ["ignore", "pipe", "ignore"],
  }).trim()
}

export default async function DevboxAuth() {
  return {
    auth: {
      provider: "databricks",
      loader: async () => ({
        apiKey: "devbox-auth",
        async fetch(url, init = {}) {
          const send = () => {
            const headers = new Headers(init.headers)
            headers.set("Authorization", `Bearer ${currentToken()}`)
            return fetch(url, { ...init, headers })
          }
          const first = await send()
          if (first.status !== 401 && first.status !== 403) return first
          return send()
        },
      }),
      methods: [{ type: "api", label: "Databricks (the app's credential, from devbox-auth)" }],
    },
  }
}
