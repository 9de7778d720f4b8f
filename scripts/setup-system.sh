#!/usr/bin/env bash
# Installs the Debian packages the test bed and benchmarks need (real BitTorrent clients,
# tracker, torrent maker, PostgreSQL, wrk, and a C++ toolchain for better-sqlite3 when no
# prebuilt binary can be downloaded). Idempotent: when everything is already
# installed it does nothing (no apt-get at all), so it is fast on a dev machine.
set -euo pipefail

PACKAGES=(
  qbittorrent-nox
  transmission-cli
  transmission-daemon
  aria2
  python3-libtorrent
  opentracker
  mktorrent
  postgresql
  wrk
  g++
  make
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "installed" ]; then missing+=("$p"); fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-system: all ${#PACKAGES[@]} system packages already installed"
  exit 0
fi

echo "setup-system: installing ${missing[*]}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "setup-system: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

# Debian starts opentracker/transmission-daemon/postgresql services on install on some
# systems; the tests start their own instances on ephemeral ports, so nothing else is needed.
/usr/bin/python3 -c 'import libtorrent; print("setup-system: python3-libtorrent", libtorrent.__version__)'
echo "setup-system: done"
