"""The original DevBox app's start-up step, as seed-behavior.md describes it, for benchmarking
devbox-auth against: the real databricks-sdk, WorkspaceClient() from the environment,
tokens.create, then the Claude Code Router config, its plugin and ~/.databrickscfg written as
the original did (plain writes, default modes)."""

import json
import os
import time

from databricks.sdk import WorkspaceClient

w = WorkspaceClient()
lifetime = int(os.environ.get("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS") or 3600)
token = w.tokens.create(comment=f"sdk-{time.time_ns()}", lifetime_seconds=lifetime)

home = os.path.expanduser("~")
host = os.environ["DATABRICKS_HOST"]
base = host if host.startswith("http") else "https://" + host
model = "databricks-claude-sonnet-4"
ccr = os.path.join(home, ".claude-code-router")
plugin = os.path.join(ccr, "plugins", "databricks-claude-transformers.js")
os.makedirs(os.path.dirname(plugin), exist_ok=True)
config = {
    "LOG": False,
    "LOG_LEVEL": "debug",
    "CLAUDE_PATH": "",
    "HOST": "127.0.0.1",
    "PORT": 3456,
    "APIKEY": "",
    "API_TIMEOUT_MS": "600000",
    "PROXY_URL": "",
    "transformers": [{"path": plugin, "options": {"debug": False}}],
    "Providers": [
        {
            "name": "databricks",
            "api_base_url": f"{base}/serving-endpoints/{model}/invocations",
            "api_key": token.token_value,
            "models": [model],
            "transformer": {"use": ["OpenAI", "databricks-custom"], model: {"use": ["OpenAI", "databricks-custom"]}},
        }
    ],
    "StatusLine": {"enabled": False, "currentStyle": "default", "default": {"modules": []}, "powerline": {"modules": []}},
    "Router": {"default": f"databricks,{model}"},
}
with open(os.path.join(ccr, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
with open(plugin, "w") as f:
    f.write("class DatabricksCustomTransformer { constructor() { this.name = 'databricks-custom'; } }\nmodule.exports = DatabricksCustomTransformer;\n")
with open(os.path.join(home, ".databrickscfg"), "w") as f:
    f.write(f"[DEFAULT]\nhost = {base}\nclient_id = {os.environ['DATABRICKS_CLIENT_ID']}\nclient_secret = {os.environ['DATABRICKS_CLIENT_SECRET']}\n")
