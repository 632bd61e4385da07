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

# The PostgreSQL store's tests start a throwaway cluster of Debian's postgresql
# (tests/conftest.py). Without root, outside CI, they skip and say why at the end.
ensure_postgresql() {
    command -v pg_ctl >/dev/null && return
    compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && return
    if [ "$(id -u)" != 0 ] && [ "${CI:-}" != true ]; then
        echo "test-deps: postgresql is missing (as root: apt-get install -y postgresql);" \
            "its tests will skip" >&2
        return
    fi
    apt_install postgresql
}

ensure_chromium
ensure_postgresql
