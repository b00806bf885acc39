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
// refused with 401 or 403 runs that command (it rotates when the workspace refuses the served
// token too, and rewrites config.json), and is sent once more with the key config.json holds
// then, to the same URL, and only if config.json still names that URL for the provider. The
// command runs once for requests refused together, at most once in 30 s (a 403 that is a
// missing permission comes back on every request), and is killed after 20 s, however it
// treats SIGTERM. A request that carried a key config.json has replaced since (refused while
// a rotation was being written) is sent once more with the current key, with no command run.
// CCR gives transformers no say over a refused answer, so this wraps the process's fetch
// (which CCR sends with) for those requests only: ones whose bearer is a key of a provider that
// uses this plugin. Any other request passes untouched.
// With options.debug it appends a line per request to ~/.claude-code-router/plugin.log
// (model and message count, and how the command ended: never headers, keys, bodies or the
// command's output).
"use strict";

const childProcess = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const RETRIED = Symbol.for("devbox-auth.ccr.retried-fetch");
// The command's own budget (`--timeout 12` and a 3 s check) ends well before this.
const COMMAND_TIMEOUT_MS = 20000;
const COMMAND_COOLDOWN_MS = 30000;
// Keys config.json held before, remembered to recognise a request that raced a rotation.
const REPLACED_KEYS_KEPT = 8;

// A duration option: a number of milliseconds from 0 to an hour, or else the default.
function milliseconds(value, fallback) {
  return Number.isFinite(value) && value >= 0 && value <= 3600000 ? value : fallback;
}

class DatabricksCustomTransformer {
  constructor(options) {
    this.name = "databricks-custom";
    this.options = options || {};
    this.configPath = this.options.configPath || path.join(os.homedir(), ".claude-code-router", "config.json");
    this.cached = { stamp: "", providers: new Map() };
    this.renewing = null;
    this.lastRenewal = -Infinity;
    this.replaced = new Map(); // a key config.json held before -> its provider's name
    this.commandTimeoutMs = milliseconds(this.options.tokenCommandTimeoutMs, COMMAND_TIMEOUT_MS);
    this.commandCooldownMs = milliseconds(this.options.tokenCommandCooldownMs, COMMAND_COOLDOWN_MS);
    const command = this.options.tokenCommand;
    const usable = Array.isArray(command) && command.length > 0 && command.every((a) => typeof a === "string");
    if (usable && typeof globalThis.fetch === "function" && !globalThis.fetch[RETRIED]) {
      const send = globalThis.fetch;
      const retried = (input, init) => this.sendRetryingOnce(send, command, input, init);
      retried[RETRIED] = true;
      globalThis.fetch = retried;
    }
  }

  // The provider whose key (now, or `replaced` since) this request carries as its bearer, if any.
  providerOf(init) {
    try {
      const match = /^Bearer (.+)$/.exec(new Headers((init && init.headers) || {}).get("authorization") || "");
      if (!match) return null;
      this.current("");
      for (const [name, { key, url, ours }] of this.cached.providers) {
        if (ours && key === match[1]) return { name, key, url, replaced: false };
      }
      const name = this.replaced.get(match[1]);
      const provider = name !== undefined && this.cached.providers.get(name);
      if (provider && provider.ours) return { name, key: match[1], url: provider.url, replaced: true };
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

  // One `token --rejected` at a time, however many requests were refused together, and none
  // within the cooldown after the last. Settles when the command exits or is killed: its output
  // (the token) is never read, so nothing waits on pipes a process it left behind holds open.
  renew(command) {
    if (this.renewing) return this.renewing;
    if (Date.now() - this.lastRenewal < this.commandCooldownMs) {
      this.log("refused again soon after the last renewal: the command is not run again yet");
      return Promise.resolve();
    }
    this.renewing = new Promise((resolve) => {
      let timer;
      let settled = false;
      const settle = (how) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.log(`token command ${how}`);
        resolve();
      };
      let child;
      try {
        child = childProcess.spawn(command[0], command.slice(1), { stdio: "ignore" });
      } catch (e) {
        // An argument node refuses (a NUL byte, say): the refused answer stands.
        settle(`could not start (${e.code || e.name})`);
        return;
      }
      timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch (_) {
          // Gone already.
        }
        settle(`killed after ${this.commandTimeoutMs} ms`);
      }, this.commandTimeoutMs);
      if (timer.unref) timer.unref();
      child.once("error", (e) => settle(`could not start (${e.code || e.name})`));
      child.once("exit", (code, signal) => settle(signal ? `ended by ${signal}` : `exited with status ${code}`));
    }).finally(() => {
      this.renewing = null;
      this.lastRenewal = Date.now();
    });
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
    // A key replaced since: the current one is new already, no need to ask for another.
    if (!ours.replaced) await this.renew(command);
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
        for (const [name, before] of this.cached.providers) {
          const now = providers.get(name);
          if (before.key && (!now || now.key !== before.key)) this.replaced.set(before.key, name);
        }
        while (this.replaced.size > REPLACED_KEYS_KEPT) this.replaced.delete(this.replaced.keys().next().value);
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
