#!/usr/bin/env bash
# Installs the real Claude Code Router the CCR test drives, pinned, into target/ccr.
# Prints the package directory. Fails when npm is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.0.73
dir=target/ccr
pkg="$dir/node_modules/@musistudio/claude-code-router"
if ! command -v npm >/dev/null; then
    echo "install-ccr: npm is not installed (apt-get install nodejs npm)" >&2
    exit 1
fi
if [ "$(node -p "require('./$pkg/package.json').version" 2>/dev/null)" != "$version" ]; then
    echo "install-ccr: installing @musistudio/claude-code-router@$version into $dir" >&2
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "@musistudio/claude-code-router@$version" >&2
fi
echo "$PWD/$pkg"
