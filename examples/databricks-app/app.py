"""The smallest app that shows devbox-auth ran first: a page on DATABRICKS_APP_PORT that says
which assistant configs are in place (Python standard library only)."""

import html
import http.server
import os

HOME = os.path.expanduser("~")
CONFIGS = [
    ".claude-code-router/config.json",
    ".claude/settings.json",
    ".codex/config.toml",
    ".gemini/settings.json",
]


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        rows = "".join(
            f"<li>~/{html.escape(path)}: {'ready' if os.path.exists(os.path.join(HOME, path)) else 'missing'}</li>"
            for path in CONFIGS
        )
        body = f"<!doctype html><title>DevBox</title><h1>DevBox is up</h1><p>Assistant configs:</p><ul>{rows}</ul>"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(os.environ.get("DATABRICKS_APP_PORT", "8000"))
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Page).serve_forever()
