#!/usr/bin/env bash
# Installs the Debian packages the test suite talks to. Idempotent; needs root or sudo.
set -euo pipefail
PACKAGES=(
  python3-venv python3-dev gcc libc6-dev linux-libc-dev make curl ca-certificates
  postgresql-client                                  # psql, a client of the PostgreSQL endpoint
  golang-go golang-github-jackc-pgx-v4-dev           # a Grafana-like pgx client, built by a test
  prometheus                                         # scrapes /metrics in a test
  nodejs                                             # a Node.js client for the eBPF capture tests
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The prometheus package may start a system service; the tests run their own instance.
  $SUDO service prometheus stop >/dev/null 2>&1 || true
fi
