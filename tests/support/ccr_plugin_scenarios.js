// What the rendered CCR plugin does with refused requests, in Node with CCR's fetch stubbed.
// Run by tests/ccr.rs: node -e <this> <plugin.js> <config.json> <scenario>. Prints one JSON
// report: each answer's status, each request sent as [url, bearer], how many times the token
// command ran, and (scenario "hangs") whether the command's process outlived the plugin's wait.
// The token command here is a stand-in for `devbox-auth token --rejected`: it renews the key
// in config.json (atomically, as devbox-auth does), and may move the URL, hang, or be slow.
"use strict";
const fs = require("fs");
const [pluginPath, configPath, scenario] = process.argv.slice(1);
const Plugin = require(pluginPath);
const runsFile = `${configPath}.runs`;
fs.rmSync(runsFile, { force: true });
const provider = JSON.parse(fs.readFileSync(configPath, "utf8")).Providers[0];

/// Rewrites config.json as a rotation does: `key` for every provider, and `url` if given.
function rewrite(key, url) {
  const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
  for (const p of config.Providers) {
    p.api_key = key;
    if (url) p.api_base_url = url;
  }
  fs.writeFileSync(`${configPath}.new`, JSON.stringify(config));
  fs.renameSync(`${configPath}.new`, configPath);
}

/// The token command: counts its runs, then does `what` (JavaScript run in a fresh node).
function command(what) {
  const prelude = `const fs = require("fs"); fs.appendFileSync(${JSON.stringify(runsFile)}, process.pid + "\\n");
    ${rewrite.toString()}; const configPath = ${JSON.stringify(configPath)};`;
  return [process.execPath, "-e", `${prelude}\n${what}`];
}

const renews = 'rewrite("renewed-key")';
const commands = {
  "same-url": renews,
  moved: 'rewrite("renewed-key", "http://127.0.0.1:9/elsewhere")',
  stream: renews,
  together: `setTimeout(() => { ${renews}; }, 300)`,
  hangs: 'process.on("SIGTERM", () => {}); setInterval(() => {}, 1000)',
  cooldown: renews,
  raced: renews,
};

const sent = [];
// The workspace: refuses the provisioned key (and, in "cooldown", the renewed one too).
// In "raced", a rotation rewrites config.json while the request with the old key is in flight.
globalThis.fetch = async (input, init) => {
  const bearer = new Headers(init.headers).get("authorization");
  sent.push([String(input), bearer]);
  if (scenario === "raced" && bearer === `Bearer ${provider.api_key}`) rewrite("rotated-key");
  const refused = bearer === `Bearer ${provider.api_key}` || scenario === "cooldown";
  return new Response("{}", { status: refused ? 403 : 200 });
};

// The kill comes after 0.5 s only where the command hangs: elsewhere a slow CI machine must
// not kill a stand-in that is still renewing.
const timeout = scenario === "hangs" ? 500 : 10000;
const plugin = new Plugin({ configPath, tokenCommand: command(commands[scenario]), tokenCommandTimeoutMs: timeout });

/// One request as CCR sends it: the transformer first (which reads config.json), then fetch.
async function request(body = "{}") {
  const live = { name: provider.name, apiKey: provider.api_key, baseUrl: provider.api_base_url };
  await plugin.transformRequestIn({ messages: [] }, live);
  const headers = { authorization: `Bearer ${live.apiKey}` };
  return (await fetch(live.baseUrl, { method: "POST", headers, body })).status;
}

async function main() {
  const statuses = [];
  if (scenario === "together") {
    statuses.push(...(await Promise.all([request(), request(), request()])));
  } else if (scenario === "stream") {
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new Uint8Array([123, 125]));
        c.close();
      },
    });
    statuses.push(await request(body));
  } else {
    statuses.push(await request());
    if (scenario === "cooldown") statuses.push(await request());
  }
  const pids = fs.existsSync(runsFile) ? fs.readFileSync(runsFile, "utf8").split("\n").filter(Boolean) : [];
  // A killed process is gone once node has reaped it: a moment after the kill.
  const running = (pid) => {
    try {
      process.kill(Number(pid), 0);
      return true;
    } catch (_) {
      return false;
    }
  };
  let alive = pids.some(running);
  for (let waited = 0; alive && waited < 3000; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    alive = pids.some(running);
  }
  console.log(JSON.stringify({ statuses, sent, runs: pids.length, alive }));
}

main();
