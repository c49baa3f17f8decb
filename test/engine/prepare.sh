#!/usr/bin/env bash
# What the engine tier's hosts need from Debian's packages: sshd, dockerd
# (docker.io), debootstrap for the images, curl, and nftables for the host firewall the program applies. Idempotent.
set -euo pipefail
packages=(openssh-server openssh-client docker.io debootstrap curl iproute2 util-linux nftables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "engine tier: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The packages must not start their own sshd or dockerd: each test host starts its own.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
