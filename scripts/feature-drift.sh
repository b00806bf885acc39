#!/usr/bin/env bash
# Prints the crates whose features differ between the host built alone (what maturin builds for
# `scripts/wheel.sh --test`) and the tests' build (`cargo test --workspace`), and exits 1 if any
# do. Each one that differs makes the test wheel compile its part of the tree a second time;
# declare the feature in host/Cargo.toml (the "Features that the tests' build turns on" block).
set -euo pipefail
cd "$(dirname "$0")/.."
features() {
    cargo tree --locked --prefix none -f '{p}|{f}' "$@" 2>/dev/null \
        | sed 's/ (\*)//; s/ (proc-macro)//' | sort -u
}
host=$(features -p devbox-auth -e normal,build)
workspace=$(features --workspace -e normal,build,dev)
names=$(cut -d'|' -f1 <<<"$host" | sort -u)
drift=$(diff <(echo "$host") <(awk -F'|' 'NR==FNR { want[$1]=1; next } want[$1]' <(echo "$names") <(echo "$workspace")) || true)
if [ -n "$drift" ]; then
    echo "feature-drift: the host alone and the tests' build resolve different features:" >&2
    echo "$drift" >&2
    exit 1
fi
