// Claude Code Router transformer plugin "databricks-custom", written by devbox-auth.
// Adapts OpenAI-format chat requests to what Databricks model serving accepts:
//   - a message whose content is "" gets content: null;
//   - cache_control is removed from every content part and from the message itself;
//   - an image_url part whose data URL lacks ";base64" gets it (data:<mime>,<data> -> data:<mime>;base64,<data>).
// And it keeps the credential fresh: CCR reads config.json only when it starts, but devbox-auth
// rotates the token while CCR runs (or, under `devbox-auth watch`, points CCR at its credential
// relay). Before each request the plugin reads the provider's current api_key and api_base_url
// from config.json (rewritten atomically on every rotation) and sets them on the live provider
// object, from which CCR builds the request's URL and `Authorization: Bearer ...` after all
// transformers ran. If the file cannot be read, what CCR already has is kept.
// A token revoked behind devbox-auth's back heals within one request: with options.tokenCommand
// (devbox-auth's `token --rejected`), a request that carried the key config.json holds and was
// refused with 401 or 403 runs that command once (it rotates when the workspace refuses the
// served token too, and rewrites config.json), and is sent once more with the key config.json
// holds then, to the same URL, and only if config.json still names that URL for the provider. CCR gives transformers no say over a refused answer, so this wraps the process's
// fetch (which CCR sends with) for those requests only: ones whose bearer is the key of a
// provider that uses this plugin. Any other request passes untouched.
// With options.debug it appends a line per request to ~/.claude-code-router/plugin.log
// (model and message count only: never headers, keys or bodies).
"use strict";

const childProcess = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const RETRIED = Symbol.for("devbox-auth.ccr.retried-fetch");

class DatabricksCustomTransformer {
  constructor(options) {
    this.name = "databricks-custom";
    this.options = options || {};
    this.configPath = this.options.configPath || path.join(os.homedir(), ".claude-code-router", "config.json");
    this.cached = { stamp: "", providers: new Map() };
    this.renewing = null;
    const command = this.options.tokenCommand;
    const usable = Array.isArray(command) && command.length > 0 && command.every((a) => typeof a === "string");
    if (usable && typeof globalThis.fetch === "function" && !globalThis.fetch[RETRIED]) {
      const send = globalThis.fetch;
      const retried = (input, init) => this.sendRetryingOnce(send, command, input, init);
      retried[RETRIED] = true;
      globalThis.fetch = retried;
    }
  }

  // The provider whose key config.json holds is the bearer this request carries, if any.
  providerOf(init) {
    try {
      const match = /^Bearer (.+)$/.exec(new Headers((init && init.headers) || {}).get("authorization") || "");
      if (!match) return null;
      this.current("");
      for (const [name, { key, url, ours }] of this.cached.providers) {
        if (ours && key === match[1]) return { name, key, url };
      }
    } catch (_) {
      // Not ours to judge.
    }
    return null;
  }

  // Whether a request to `url` went to the provider's `base` (CCR posts to it as it is).
  sentTo(url, base) {
    try {
      return typeof base === "string" && new URL(url).href === new URL(base).href;
    } catch (_) {
      return false;
    }
  }

  // One `token --rejected` at a time, however many requests were refused together.
  renew(command) {
    if (!this.renewing) {
      this.renewing = new Promise((resolve) => {
        try {
          childProcess.execFile(command[0], command.slice(1), { timeout: 15000 }, () => resolve());
        } catch (_) {
          // An argument node refuses (a NUL byte, say): the refused answer stands.
          resolve();
        }
      }).finally(() => {
        this.renewing = null;
      });
    }
    return this.renewing;
  }

  async sendRetryingOnce(send, command, input, init) {
    const answer = await send(input, init);
    if (answer.status !== 401 && answer.status !== 403) return answer;
    // Only a request given as a URL with a body that can be sent twice (CCR's JSON string).
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : null;
    const body = init && init.body;
    if (!url || (body != null && typeof body !== "string")) return answer;
    const ours = this.providerOf(init);
    if (!ours || !this.sentTo(url, ours.url)) return answer;
    await this.renew(command);
    const { key: fresh, url: freshUrl } = this.current(ours.name);
    if (!fresh || fresh === ours.key) return answer;
    // The new key goes only where the refused request went, and only if config.json still sends
    // that provider there (after `watch` stopped, say, a relay's old port is anyone's).
    if (!this.sentTo(url, freshUrl)) return answer;
    this.log("refused with 401/403; sent once more with the renewed key");
    try {
      if (answer.body) await answer.body.cancel();
    } catch (_) {
      // The first answer is dropped either way.
    }
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${fresh}`);
    return send(input, { ...init, headers });
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

  // An http(s) URL CCR can post to, or null (what CCR already has is kept).
  httpUrl(text) {
    try {
      const url = new URL(text);
      return url.protocol === "http:" || url.protocol === "https:" ? text : null;
    } catch (_) {
      return null;
    }
  }

  // The provider's current {key, url} from config.json, re-read only when the file changed.
  current(providerName) {
    try {
      const stat = fs.statSync(this.configPath);
      // Each rotation renames a new file into place: a new inode.
      const stamp = `${stat.ino}:${stat.mtimeMs}:${stat.size}`;
      if (stamp !== this.cached.stamp) {
        const config = JSON.parse(fs.readFileSync(this.configPath, "utf8"));
        const providers = new Map();
        for (const p of config.Providers || config.providers || []) {
          if (!p || typeof p.name !== "string") continue;
          const key = typeof p.api_key === "string" ? p.api_key.trim() : "";
          const url = typeof p.api_base_url === "string" ? p.api_base_url.trim() : "";
          providers.set(p.name, {
            // CCR expands $VAR at start; a key that is a variable reference stays as CCR set it.
            key: key && !key.startsWith("$") ? key : null,
            url: this.httpUrl(url),
            // A provider this plugin transforms (devbox-auth's): the only ones it renews keys for.
            ours: JSON.stringify(p.transformer || {}).includes('"databricks-custom"'),
          });
        }
        this.cached = { stamp, providers };
      }
      return this.cached.providers.get(providerName) || { key: null, url: null };
    } catch (_) {
      return { key: null, url: null };
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
      const { key, url } = this.current(provider.name);
      if (key && key !== provider.apiKey) {
        provider.apiKey = key;
        this.log("key refreshed from config.json");
      }
      if (url && url !== provider.baseUrl) {
        provider.baseUrl = url;
        this.log("URL refreshed from config.json");
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
