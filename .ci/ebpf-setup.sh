#!/usr/bin/env bash
# Makes bcc usable on a fresh Debian bookworm machine: installs bcc and kernel headers, links the
# headers where bcc looks for them, mounts tracefs/debugfs, and lets a virtual environment import
# Debian's bcc module. Idempotent; needs root or sudo.
#
# usage: .ci/ebpf-setup.sh [VENV_DIR]     (VENV_DIR defaults to ./.venv)
set -euo pipefail

VENV_DIR="${1:-.venv}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# bcc from Debian (the PyPI package named "bcc" is unrelated); headers for the running kernel do
# not exist as a package here, the distribution's generic ones are close enough for tracepoint
# and uprobe programs, which read only tracepoint arguments, registers and user memory.
ARCH="$(dpkg --print-architecture)"
PACKAGES=(python3-bpfcc bpfcc-tools "linux-headers-${ARCH}" libssl3)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "ebpf-setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# bcc looks for /lib/modules/$(uname -r)/build (arch headers) and .../source (common headers).
KREL="$(uname -r)"
MODDIR="/lib/modules/${KREL}"
if [ ! -e "${MODDIR}/build/include" ]; then
  arch_dir="$(ls -d /usr/src/linux-headers-*-"${ARCH}" 2>/dev/null | sort -V | tail -n1 || true)"
  common_dir="$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)"
  if [ -z "${arch_dir}" ] || [ -z "${common_dir}" ]; then
    echo "ebpf-setup: no kernel headers under /usr/src" >&2
    exit 1
  fi
  $SUDO mkdir -p "${MODDIR}"
  $SUDO ln -sfn "${arch_dir}" "${MODDIR}/build"
  $SUDO ln -sfn "${common_dir}" "${MODDIR}/source"
  echo "ebpf-setup: ${MODDIR}/build -> ${arch_dir}, source -> ${common_dir}"
fi

# Tracepoint and uprobe attachment goes through tracefs.
if [ ! -e /sys/kernel/tracing/events ]; then
  $SUDO mount -t tracefs nodev /sys/kernel/tracing || echo "ebpf-setup: cannot mount tracefs" >&2
fi
if [ ! -e /sys/kernel/debug/tracing ] && ! mountpoint -q /sys/kernel/debug; then
  $SUDO mount -t debugfs nodev /sys/kernel/debug || echo "ebpf-setup: cannot mount debugfs" >&2
fi

# A directory that holds only a link to Debian's bcc package, put on the venv's path by a .pth
# file: importing all of dist-packages would shadow the venv's own packages.
if [ -d "${VENV_DIR}" ]; then
  VENV_PY="${VENV_DIR}/bin/python"
  site="$("${VENV_PY}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  shim="$(cd "${VENV_DIR}" && pwd)/bcc-shim"
  mkdir -p "${shim}"
  ln -sfn /usr/lib/python3/dist-packages/bcc "${shim}/bcc"
  echo "${shim}" > "${site}/infersight-bcc.pth"
  if "${VENV_PY}" -c 'import bcc' 2>/dev/null; then
    echo "ebpf-setup: bcc importable from ${VENV_DIR}"
  else
    echo "ebpf-setup: bcc still not importable from ${VENV_DIR}" >&2
    exit 1
  fi
else
  echo "ebpf-setup: no virtual environment at ${VENV_DIR}; skipped the bcc link" >&2
fi
