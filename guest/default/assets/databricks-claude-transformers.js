// Claude Code Router transformer plugin "databricks-custom", written by devbox-auth.
// Adapts OpenAI-format chat requests to what Databricks model serving accepts:
//   - a message whose content is "" gets content: null;
//   - cache_control is removed from every content part and from the message itself;
//   - an image_url part whose data URL lacks ";base64" gets it (data:<mime>,<data> -> data:<mime>;base64,<data>).
// And it keeps the token fresh: CCR reads config.json only when it starts, but devbox-auth
// rotates the token while CCR runs. Before each request the plugin reads the provider's current
// api_key from config.json (rewritten atomically on every rotation) and sets it on the live
// provider object, from which CCR builds `Authorization: Bearer ...` after all transformers ran.
// If the file cannot be read, the key CCR already has is kept.
// With options.debug it appends a line per request to ~/.claude-code-router/plugin.log
// (model and message count only: never headers, keys or bodies).
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

class DatabricksCustomTransformer {
  constructor(options) {
    this.name = "databricks-custom";
    this.options = options || {};
    this.configPath = this.options.configPath || path.join(os.homedir(), ".claude-code-router", "config.json");
    this.cached = { stamp: "", keys: {} };
  }

  log(message) {
    if (!this.options.debug) return;
    try {
      const file = path.join(os.homedir(), ".claude-code-router", "plugin.log");
      fs.appendFileSync(file, `[${new Date().toISOString()}] ${message}\n`);
    } catch (_) {
      // Logging must never break a request.
    }
  }

  // The provider's current api_key from config.json, re-read only when the file changed.
  currentKey(providerName) {
    try {
      const stat = fs.statSync(this.configPath);
      // Each rotation renames a new file into place: a new inode.
      const stamp = `${stat.ino}:${stat.mtimeMs}:${stat.size}`;
      if (stamp !== this.cached.stamp) {
        const config = JSON.parse(fs.readFileSync(this.configPath, "utf8"));
        const keys = {};
        for (const p of config.Providers || config.providers || []) {
          if (p && typeof p.name === "string" && typeof p.api_key === "string" && p.api_key.trim()) {
            keys[p.name] = p.api_key.trim();
          }
        }
        this.cached = { stamp, keys };
      }
      const key = this.cached.keys[providerName];
      // CCR expands $VAR at start; a key that is a variable reference stays as CCR set it.
      return key && !key.startsWith("$") ? key : null;
    } catch (_) {
      return null;
    }
  }

  fixPart(part) {
    if (!part || typeof part !== "object") return;
    delete part.cache_control;
    if (part.type === "image_url" && part.image_url && typeof part.image_url.url === "string") {
      const url = part.image_url.url;
      const comma = url.indexOf(",");
      if (url.startsWith("data:") && comma > 0 && !url.slice(0, comma).includes("base64")) {
        part.image_url.url = `${url.slice(0, comma)};base64${url.slice(comma)}`;
      }
    }
  }

  async transformRequestIn(request, provider) {
    if (provider && typeof provider === "object") {
      const key = this.currentKey(provider.name);
      if (key && key !== provider.apiKey) {
        provider.apiKey = key;
        this.log("token refreshed from config.json");
      }
    }
    const messages = Array.isArray(request && request.messages) ? request.messages : [];
    for (const message of messages) {
      if (!message || typeof message !== "object") continue;
      delete message.cache_control;
      if (message.content === "") message.content = null;
      if (Array.isArray(message.content)) message.content.forEach((part) => this.fixPart(part));
    }
    this.log(`transformRequestIn model=${request && request.model} messages=${messages.length}`);
    // The plain body: this plugin is also listed per model, where {body, config} is not unwrapped.
    return request;
  }
}

module.exports = DatabricksCustomTransformer;
