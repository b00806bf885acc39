#!/usr/bin/env bash
# Installs the real assistants the client tests drive, pinned, into target/clients: Claude Code,
# Codex, Gemini CLI, OpenCode and Pi from the npm registry (each ships its own binary or bundle and runs
# offline against the loopback workspace emulation). Prints the node_modules/.bin directory.
# Fails when npm is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/clients
packages=("@anthropic-ai/claude-code@2.1.328" "@openai/codex@0.169.0" "@google/gemini-cli@0.61.0"
    "opencode-ai@1.18.33" "@mariozechner/pi-coding-agent@0.73.1")
if ! command -v npm >/dev/null; then
    echo "install-clients: npm is not installed (apt-get install nodejs npm)" >&2
    exit 1
fi
stamp="$dir/.installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]; then
    echo "install-clients: installing ${packages[*]} into $dir" >&2
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "${packages[@]}" >&2
    echo "${packages[*]}" > "$stamp"
fi
echo "$PWD/$dir/node_modules/.bin"
