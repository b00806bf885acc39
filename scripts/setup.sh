#!/usr/bin/env bash
# Installs what a fresh machine lacks to build devbox-auth: the wasm32-wasip2 Rust target
# (rustup does not add it by itself here: RUSTUP_AUTO_INSTALL=0).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi
