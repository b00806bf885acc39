// OpenCode plugin written by devbox-auth: the "databricks" provider's credential, fetched at
// request time so that no token in a config file goes stale while OpenCode runs.
// OpenCode calls an auth loader only for a provider with an entry in
// ~/.local/share/opencode/auth.json; devbox-auth writes one whose key is a placeholder, never
// sent. This loader's fetch asks `devbox-auth token` for the current token before every request
// (from the state file: about a millisecond, no network when nothing is due). On a 401 or 403
// it sends the request once more if a renewed token differs from the one refused (see
// `renewal`); any failure on the way leaves the workspace's own answer standing. It never logs
// or prints the token.
import { execFile } from "node:child_process"

const BINARY = __DEVBOX_AUTH_BINARY__
const HOME = __DEVBOX_AUTH_HOME__

__DEVBOX_AUTH_TOKEN_COMMAND__

export default async function DevboxAuth() {
  const renewed = renewal()
  const send = (url, init, token) => {
    const headers = new Headers(init.headers)
    headers.set("Authorization", `Bearer ${token}`)
    return fetch(url, { ...init, headers })
  }
  return {
    auth: {
      provider: "databricks",
      loader: async () => ({
        apiKey: "placeholder-the-devbox-auth-plugin-sends-the-token",
        async fetch(url, init = {}) {
          const { token, failure } = await runTokenCommand()
          if (!token) throw new Error(failure)
          const first = await send(url, init, token)
          if ((first.status !== 401 && first.status !== 403) || !resendable(url, init)) return first
          const fresh = await renewed(token, init.signal)
          if (!fresh) return first
          await first.body?.cancel().catch(() => {})
          return send(url, init, fresh)
        },
      }),
      methods: [{ type: "api", label: "Databricks (the app's credential, from devbox-auth)" }],
    },
  }
}
