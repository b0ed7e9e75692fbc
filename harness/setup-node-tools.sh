#!/usr/bin/env bash
# Installs the Node tools the tests use into a cache outside the repository, idempotently:
# Continue's own config schema package, @continuedev/config-yaml (pinned), which
# harness/validate-continue-config.mjs uses to check the Continue config the optimizer writes.
#
#   bash harness/setup-node-tools.sh      # prints the install directory on stdout
#
# Needs Node >= 20 and npm. Override the cache with O3_CACHE (default ~/.cache/o3-suite).
# The directory printed is what O3_NODE_TOOLS must point to (harness/test.sh exports it).
set -euo pipefail
VERSION=1.42.0
PKG=@continuedev/config-yaml
DIR="${O3_CACHE:-$HOME/.cache/o3-suite}/node/config-yaml-$VERSION"
STAMP="$DIR/.installed"

if [[ ! -f "$STAMP" ]]; then
  command -v node >/dev/null || { echo "[node-tools] node not found (Node >= 20 needed)" >&2; exit 1; }
  command -v npm >/dev/null || { echo "[node-tools] npm not found" >&2; exit 1; }
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
    { echo "[node-tools] Node $(node --version) is too old (>= 20 needed)" >&2; exit 1; }
  echo "[node-tools] installing $PKG@$VERSION into $DIR" >&2
  mkdir -p "$DIR"
  if [[ ! -f "$DIR/package.json" ]]; then
    printf '{ "name": "o3-suite-node-tools", "private": true, "type": "module" }\n' >"$DIR/package.json"
  fi
  npm install --prefix "$DIR" --no-audit --no-fund --save-exact "$PKG@$VERSION" >&2
  touch "$STAMP"
fi
echo "$DIR"
