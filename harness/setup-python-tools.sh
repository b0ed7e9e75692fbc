#!/usr/bin/env bash
# Installs the Python tools the tests use into a cache outside the repository, idempotently:
# the official Ollama Python client, PyPI `ollama` (pinned), in a virtual environment that
# harness/refserver/tests/ollama_client.rs drives the reference server with.
#
#   bash harness/setup-python-tools.sh      # prints the virtual environment's directory on stdout
#
# Needs python3 (>= 3.8) with the venv module. Override the cache with O3_CACHE
# (default ~/.cache/o3-suite). The directory printed is what O3_PY_TOOLS must point to
# (harness/test.sh exports it).
set -euo pipefail
VERSION=0.6.3
PKG=ollama
DIR="${O3_CACHE:-$HOME/.cache/o3-suite}/python/ollama-$VERSION"
STAMP="$DIR/.installed"

if [[ ! -f "$STAMP" ]]; then
  command -v python3 >/dev/null || { echo "[python-tools] python3 not found" >&2; exit 1; }
  python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' ||
    { echo "[python-tools] $(python3 --version) is too old (>= 3.8 needed)" >&2; exit 1; }
  echo "[python-tools] installing $PKG==$VERSION into $DIR" >&2
  rm -rf "$DIR"
  mkdir -p "$(dirname "$DIR")"
  python3 -m venv "$DIR" >&2 ||
    { echo "[python-tools] python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$DIR/bin/python" -m pip install --quiet --disable-pip-version-check "$PKG==$VERSION" >&2
  "$DIR/bin/python" -c "import importlib.metadata as m, sys; v = m.version('$PKG'); sys.exit(0 if v == '$VERSION' else 'installed ' + v)"
  "$DIR/bin/python" -m pip freeze --disable-pip-version-check >"$DIR/requirements.lock"
  touch "$STAMP"
fi
echo "$DIR"
