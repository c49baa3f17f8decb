#!/usr/bin/env bash
# Installs, from Debian packages, every server the integration suite runs:
# PostgreSQL 15, Redis 7.0, Nginx, Prometheus (with promtool), Alertmanager
# (with amtool), pgBackRest and the exporters,
# plus the clients and tools the scenarios use (iproute2 for network namespaces,
# nftables for the host firewall, openssl, a JDK for the truststore check).
# Idempotent: a second run installs nothing.
#
# It starts and stops nothing: the suite runs its own instances, each inside
# a network namespace of its own, from rendered files, so a copy of a server
# that already runs on this machine is neither in their way nor touched.
set -euo pipefail

packages=(
  postgresql-15 postgresql-client-15
  redis-server redis-tools
  nginx-light
  prometheus prometheus-postgres-exporter prometheus-redis-exporter prometheus-node-exporter
  prometheus-alertmanager pgbackrest
  iproute2 nftables openssl curl procps psmisc
  default-jdk-headless
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-servers: all packages present"
  exit 0
fi

echo "install-test-servers: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages must not start their own copies of the servers (invoke-rc.d asks
# policy-rc.d first; 101 means "action forbidden"). A policy-rc.d that is
# already there belongs to someone else: it is left as it is.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
