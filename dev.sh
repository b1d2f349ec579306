#!/usr/bin/env bash
# One entry point for a fresh clone: sets up .venv (CPU torch where there is no CUDA),
# then runs the demo loop or the test suite. Safe to run again: set-up is skipped when current.
#   ./dev.sh demo   the loop on the built-in defaults (offline agent, 8 experiments of 100,000 tokens; args go to `nightlab run`)
#   ./dev.sh test   lint and types (ruff, mypy), then the whole test suite (args go to pytest)
#   ./dev.sh lint   only ruff (lint and format check) and mypy
#   ./dev.sh vsix   the VS Code extension: client-vscode/dist/nightlab.vsix (needs Node 20 and npm)
#   ./dev.sh setup  only the set-up
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${NIGHTLAB_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[dev.sh] creating $VENV" >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  fi
  local pip=("$VENV/bin/python" -m pip install -q)
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if [ -n "${NIGHTLAB_TORCH:-}" ]; then
      echo "[dev.sh] installing $NIGHTLAB_TORCH" >&2; "${pip[@]}" "$NIGHTLAB_TORCH" >&2
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      echo "[dev.sh] CUDA found: installing torch (CUDA build)" >&2; "${pip[@]}" "torch>=2.4" >&2
    else
      # No CUDA: the CPU build. On these machines torch==2.13.0 is a CPU wheel on local disk;
      # elsewhere set NIGHTLAB_TORCH, e.g. "torch --index-url https://download.pytorch.org/whl/cpu".
      echo "[dev.sh] no CUDA: installing torch==2.13.0 (CPU)" >&2; "${pip[@]}" "torch==2.13.0" >&2
    fi
  fi
  local stamp="$VENV/.nightlab-stamp" want
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[dev.sh] installing nightlab (editable) with its dev and ray extras (ray: the local-cluster tests)" >&2
    "${pip[@]}" -e "$ROOT[dev,ray]" >&2
    echo "$want" > "$stamp"
  fi
}

system_packages() {
  # What the tests need from Debian beyond Python: Neovim (a second LSP client), Chromium (the panel's
  # browser tests), bubblewrap (the sandbox), and what code-server's build needs (its end-to-end test).
  # Installed when we may (root with apt-get); else named, and the tests that need them are skipped.
  local want=(neovim:nvim chromium:/usr/bin/chromium bubblewrap:bwrap build-essential:make pkg-config:pkg-config
              libkrb5-dev:krb5-config ripgrep:rg) missing=() item pkg probe
  for item in "${want[@]}"; do
    pkg="${item%%:*}"; probe="${item#*:}"
    if [[ "$probe" == /* ]]; then [ -x "$probe" ] || missing+=("$pkg"); else command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg"); fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${NIGHTLAB_SKIP_APT:-0}" != 1 ]; then
    echo "[dev.sh] installing Debian packages for the editor, browser and sandbox tests: ${missing[*]}" >&2
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") >/dev/null 2>&1; then
      return 0
    fi
    echo "[dev.sh] could not install ${missing[*]}" >&2
  fi
  echo "[dev.sh] missing ${missing[*]} (install: sudo apt-get install ${missing[*]}): the tests that need them are skipped, and say why" >&2
}

lint() {
  # Every check runs, so one report shows all that is wrong; the status says whether any failed.
  local failed=0
  "$VENV/bin/ruff" check "$ROOT" || failed=1
  "$VENV/bin/ruff" format --check "$ROOT" >/dev/null || { "$VENV/bin/ruff" format --check "$ROOT"; failed=1; }
  (cd "$ROOT" && "$VENV/bin/mypy") || failed=1
  if [ $failed -ne 0 ]; then echo "[dev.sh] lint or types failed (./dev.sh lint; ruff format fixes layout)" >&2; fi
  return $failed
}

cmd="${1:-demo}"; shift || true
case "$cmd" in
  setup) setup ;;
  demo)
    setup
    DEMO="${NIGHTLAB_DEMO_DIR:-$ROOT/demo}"
    [ -f "$DEMO/nightlab.toml" ] || "$VENV/bin/nightlab" init "$DEMO"
    cd "$DEMO"
    # With no arguments: 8 experiments of 100,000 training tokens each (a token budget: the machine's
    # load cannot decide a verdict; the baseline runs at 3 seeds, candidates at the same seeds, each run
    # judged by judge.py). Pass your own, e.g. ./dev.sh demo --max-experiments 100, or Ctrl-C to stop.
    if [ $# -eq 0 ]; then set -- --max-experiments 8 --budget-tokens 100000; fi
    exec "$VENV/bin/nightlab" run "$@"
    ;;
  lint)
    setup
    lint
    ;;
  test)
    setup
    system_packages
    cd "$ROOT"
    status=0
    lint || status=1
    "$VENV/bin/python" -m pytest "$@" || status=$?
    exit $status
    ;;
  vsix)
    setup  # the .vsix carries the nightlab wheel, built with this Python
    cd "$ROOT/client-vscode"
    npm ci --no-audit --no-fund >&2
    NIGHTLAB_PYTHON="$VENV/bin/python" npm run package >&2
    echo "built client-vscode/dist/nightlab.vsix; install it with: code --install-extension client-vscode/dist/nightlab.vsix"
    ;;
  *) echo "usage: ./dev.sh demo|test|lint|vsix|setup [args...]" >&2; exit 2 ;;
esac
