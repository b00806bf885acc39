// Claude Code Router transformer plugin "databricks-custom", written by devbox-auth.
// Adapts OpenAI-format chat requests to what Databricks model serving accepts:
//   - a message whose content is "" gets content: null;
//   - cache_control is removed from every content part and from the message itself;
//   - an image_url part whose data URL lacks ";base64" gets it (data:<mime>,<data> -> data:<mime>;base64,<data>).
// With options.debug it appends a line per request to ~/.claude-code-router/plugin.log
// (model and message count only: never headers or bodies, which may hold secrets).
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

class DatabricksCustomTransformer {
  constructor(options) {
    this.name = "databricks-custom";
    this.options = options || {};
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
    const messages = Array.isArray(request && request.messages) ? request.messages : [];
    for (const message of messages) {
      if (!message || typeof message !== "object") continue;
      delete message.cache_control;
      if (message.content === "") message.content = null;
      if (Array.isArray(message.content)) message.content.forEach((part) => this.fixPart(part));
    }
    this.log(`transformRequestIn model=${request && request.model} messages=${messages.length}`);
    return request;
  }
}

module.exports = DatabricksCustomTransformer;
