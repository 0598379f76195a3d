#!/usr/bin/env bash
# Installs, as root, the Debian 12 packages an Ursa host needs, in one
# `apt-get install`, and prints the QEMU versions it ended with:
#
#   nftables                       routers' NAT and floating IPs, security groups
#   qemu-system-x86, qemu-utils    guests; qemu-img (images onto volumes, overlays)
#   linux-image-amd64, busybox-static, cpio, syslinux, syslinux-common,
#   mtools, dosfstools             the tiny test guest (images/tiny/build.sh)
#   python3-openstackclient        the `openstack` CLI
#
# QEMU's emulator and qemu-img are pinned to one version: the emulator's
# candidate, with --allow-downgrades. Debian 12 images may ship a backported
# qemu-utils (10.x) that Breaks Debian 12's qemu-system-common (7.2), so
# installing the two unpinned fails ("Unable to correct problems").
#
# Usage: scripts/host-packages.sh [--simulate] [EXTRA-PACKAGE ...]
#   --simulate   apt-get install -s: show what would change, change nothing
# Idempotent: a host that has everything at one QEMU version skips apt.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
sim=()
if [ "${1:-}" = --simulate ]; then
  sim=(-s)
  shift
fi
extra=("$@")

installed() { { dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null || true; } | awk '$1=="ii"{print $2}'; }
want=(nftables busybox-static cpio syslinux syslinux-common mtools dosfstools python3-openstackclient "${extra[@]}")
ls /boot/vmlinuz-* >/dev/null 2>&1 || want+=(linux-image-amd64)

missing=()
for p in "${want[@]}"; do [ -n "$(installed "$p")" ] || missing+=("$p"); done
qsys=$(installed qemu-system-x86)
qutils=$(installed qemu-utils)
if [ ${#missing[@]} -eq 0 ] && [ -n "$qsys" ] && [ "$qsys" = "$qutils" ] && [ ${#sim[@]} -eq 0 ]; then
  echo "host packages: all present; QEMU $qsys (qemu-system-x86 and qemu-utils)"
  exit 0
fi

apt-get update -q >/dev/null
v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
if [ -z "$v" ] || [ "$v" = "(none)" ]; then
  echo "host packages: apt knows no qemu-system-x86 (check /etc/apt/sources.list)" >&2
  exit 2
fi
qemu=(qemu-system-x86="$v" qemu-system-common="$v" qemu-utils="$v")
# Other QEMU packages already installed must move to the same version.
for p in qemu-block-extra qemu-system-gui qemu-system-modules-spice qemu-system-modules-opengl; do
  [ -z "$(installed "$p")" ] || qemu+=("$p=$v")
done
echo "host packages: installing ${missing[*]:-(none besides QEMU)} and QEMU $v (${qemu[*]})"
apt-get install "${sim[@]}" -y -q --no-install-recommends --allow-downgrades \
  "${missing[@]}" "${qemu[@]}" >/tmp/ursa-host-packages.log 2>&1 || {
  tail -20 /tmp/ursa-host-packages.log >&2
  exit 1
}
if [ ${#sim[@]} -gt 0 ]; then
  grep -E '^(Inst|Remv)|upgraded|downgraded' /tmp/ursa-host-packages.log
  exit 0
fi
echo "host packages: qemu-system-x86 $(installed qemu-system-x86), qemu-utils $(installed qemu-utils)"
echo "host packages: $(qemu-system-x86_64 --version | head -1); $(qemu-img --version | head -1)"
