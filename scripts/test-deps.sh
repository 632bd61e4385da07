#!/usr/bin/env bash
# What `make test` needs beyond python3 and make, brought in once on a fresh machine.
# One `ensure_*` function per dependency, called at the bottom: adding one is one line.
set -euo pipefail

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "test-deps: $1 is missing; install it as root: apt-get install -y $*" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The viewer's browser tests drive Debian's chromium (Playwright itself comes from the
# test extras of pyproject.toml).
ensure_chromium() {
    [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || apt_install chromium
}

ensure_chromium
