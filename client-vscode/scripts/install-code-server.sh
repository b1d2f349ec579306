#!/usr/bin/env bash
# Install code-server 4.100.3 (VS Code 1.100.3) from npm, for Nightlab's end-to-end tests.
#
# code-server 4.100.3 is the newest release that runs on Node 20. Its npm postinstall would
# download ripgrep (and more) from the internet, so it is installed with --ignore-scripts and
# the post-install (what its postinstall.sh does, minus the downloads) is done here by hand.
#
# Usage:
#   scripts/install-code-server.sh              install if needed; the last line on stdout is
#                                               the path of the code-server entry point
#   scripts/install-code-server.sh --print-bin  print the entry point if installed, else exit 1
#   scripts/install-code-server.sh --force      reinstall from scratch (deletes the directory)
#
# Environment:
#   NIGHTLAB_CODE_SERVER_DIR  where to install (default ~/.cache/nightlab/code-server-4.100.3)
#   NIGHTLAB_SKIP_APT=1       never call apt-get; only check that the packages are there
#
# Progress goes to stderr, so `BIN=$(scripts/install-code-server.sh)` works.
# A stamp file makes a second call return at once. Safe to run concurrently (flock).
set -euo pipefail

VERSION=4.100.3
DIR="${NIGHTLAB_CODE_SERVER_DIR:-$HOME/.cache/nightlab/code-server-$VERSION}"
STAMP="$DIR/.nightlab-installed"
STAMP_CONTENT="code-server $VERSION; node $(node -p 'process.versions.modules' 2>/dev/null || echo '?')"
BIN="$DIR/node_modules/code-server/out/node/entry.js"
APT_PACKAGES=(build-essential pkg-config python3 libkrb5-dev ripgrep chromium)

log() { printf '[install-code-server] %s\n' "$*" >&2; }
die() { printf '[install-code-server] ERROR: %s\n' "$*" >&2; exit 1; }
run() { log "+ $*"; "$@" >&2; }

installed() { [[ -f "$STAMP" && -f "$BIN" && "$(cat "$STAMP")" == "$STAMP_CONTENT" ]]; }

FORCE=0
case "${1:-}" in
  --print-bin) installed && { echo "$BIN"; exit 0; }; log "code-server $VERSION is not installed in $DIR"; exit 1 ;;
  --force) FORCE=1 ;;
  -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

if [[ $FORCE == 0 ]] && installed; then
  log "code-server $VERSION already installed in $DIR"
  echo "$BIN"
  exit 0
fi

START=$SECONDS

# --- Node ---------------------------------------------------------------------------------
command -v node >/dev/null || die "node is not on PATH (code-server $VERSION needs Node 20)"
command -v npm >/dev/null || die "npm is not on PATH"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$NODE_MAJOR" == 20 ]] || log "WARNING: Node $(node -v); code-server $VERSION is built for Node 20"

# Native modules (argon2, node-pty, kerberos, ...) are compiled against the local Node's headers;
# without a nodedir node-gyp would try to download them, which fails offline.
if [[ -z "${npm_config_nodedir:-}" ]]; then
  npm_config_nodedir=/usr
  if [[ ! -f /usr/include/node/node.h ]]; then
    alt="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
    [[ -f "$alt/include/node/node.h" ]] && npm_config_nodedir="$alt"
  fi
fi
export npm_config_nodedir
export npm_config_yes=true
# Keep npm quiet and offline-friendly (no audit/fund/update checks).
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
[[ -f "$npm_config_nodedir/include/node/node.h" ]] \
  || log "WARNING: no Node headers under $npm_config_nodedir/include/node; native builds may try to download them"

# --- apt packages -------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ "${NIGHTLAB_SKIP_APT:-0}" == 1 ]]; then
    die "missing Debian packages: ${missing[*]} (NIGHTLAB_SKIP_APT=1). Install them with: sudo apt-get install -y ${missing[*]}"
  elif [[ "$(id -u)" != 0 ]]; then
    die "missing Debian packages: ${missing[*]}. Install them first (as root): sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
  fi
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get on this system"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run apt-get update -q
  run apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages present: ${APT_PACKAGES[*]}"
fi
RG="$(command -v rg)" || die "ripgrep (rg) is not on PATH after installing it"
command -v chromium >/dev/null || log "WARNING: chromium is not on PATH"

# --- code-server from npm -----------------------------------------------------------------
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
log "waiting for the install lock $DIR.lock"
flock 9
# Another process may have finished the install while we waited.
if [[ $FORCE == 0 ]] && installed; then
  log "code-server $VERSION was installed by another process in $DIR"
  echo "$BIN"
  exit 0
fi
if [[ $FORCE == 1 && -d "$DIR" ]]; then
  run rm -rf "$DIR"
fi
rm -f "$STAMP"
mkdir -p "$DIR"
cd "$DIR"
log "installing code-server $VERSION into $DIR"
# Own package.json, so npm never climbs to a parent project (e.g. client-vscode/) and installs there.
[[ -f package.json ]] || printf '{\n  "name": "nightlab-code-server",\n  "private": true\n}\n' > package.json

# Its postinstall fetches ripgrep etc. from the internet: skip it and do its work below.
run npm install "code-server@$VERSION" --ignore-scripts
run npm rebuild argon2

VSC="$DIR/node_modules/code-server/lib/vscode"
[[ -d "$VSC" ]] || die "unexpected package layout: $VSC is missing"
cd "$VSC"
run npm install --omit=dev --ignore-scripts
mkdir -p node_modules/@vscode/ripgrep/bin
run ln -sfn "$RG" node_modules/@vscode/ripgrep/bin/rg
run npm rebuild
[[ -e node_modules.asar ]] || run ln -s node_modules node_modules.asar
run ln -sfn code-linux.sh bin/remote-cli/code-server
run ln -sfn browser-linux.sh bin/helpers/browser.sh
cd "$VSC/extensions"
run npm install --omit=dev

# --- check ---------------------------------------------------------------------------------
# code-server writes a config file and logs under XDG_CONFIG_HOME / XDG_DATA_HOME even for --version.
tmp="$(mktemp -d)"
ver="$(XDG_CONFIG_HOME="$tmp" XDG_DATA_HOME="$tmp" node "$BIN" --version 2>&1 | grep -E "^$VERSION " || true)"
rm -rf "$tmp"
[[ -n "$ver" ]] || die "code-server does not start: 'node $BIN --version' did not print $VERSION"
echo "$STAMP_CONTENT" > "$STAMP"
log "installed code-server $ver in $((SECONDS - START)) s"
echo "$BIN"
