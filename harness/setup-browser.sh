#!/usr/bin/env bash
# Installs a headless browser for the HTML report's test (tests/browser.rs), idempotently:
# Debian's Chromium (and a basic font, so the screenshot has text), from the distribution's
# packages. Prints the browser's path on stdout; harness/test.sh exports it as O3_CHROMIUM.
#
#   bash harness/setup-browser.sh
#
# Uses O3_CHROMIUM when it is set and executable. Installing needs root (CI runs as root) or
# sudo; otherwise it says what to install.
set -euo pipefail
find_browser() {
  if [[ -n "${O3_CHROMIUM:-}" && -x "${O3_CHROMIUM}" ]]; then echo "$O3_CHROMIUM"; return 0; fi
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  return 1
}
if ! find_browser >/dev/null; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[browser] no chromium found and no apt-get: install Chromium and set O3_CHROMIUM" >&2
    exit 1
  fi
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "[browser] installing chromium needs root or sudo" >&2; exit 1; }
    SUDO=sudo
  fi
  echo "[browser] installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2 ||
    { $SUDO apt-get update >&2 && $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2; }
fi
find_browser
