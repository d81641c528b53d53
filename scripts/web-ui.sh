#!/usr/bin/env bash
# The web UI's tools: `node` (Node.js and npm, to build ui/) and `chromium` (Debian's Chromium, which the browser
# tests drive through Playwright's executable_path; Playwright never downloads a browser here). Each is installed
# from Debian's packages when missing (as root), else the script says what to install.
set -euo pipefail

log() { echo "web-ui: $*" >&2; }
die() { log "$*"; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

apt_install() {
    is_root || die "missing '$*': install it with: sudo apt-get install -y $*"
    command -v apt-get >/dev/null || die "missing '$*' and no apt-get on this machine"
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

case "${1:-}" in
    node)
        command -v npm >/dev/null && command -v node >/dev/null || apt_install nodejs npm
        ;;
    chromium)
        [[ -x "${KSEF_HUB_CHROMIUM:-/usr/bin/chromium}" ]] || apt_install chromium
        ;;
    *)
        die "usage: $0 node|chromium"
        ;;
esac
