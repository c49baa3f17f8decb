#!/usr/bin/env bash
# Installs, from Debian packages, every server the integration suite runs:
# PostgreSQL 15, Redis 7.0, Nginx, Prometheus (with promtool) and the exporters,
# plus the clients and tools the scenarios use (iproute2 for network namespaces,
# openssl, a JDK for the truststore check). Idempotent: a second run installs nothing.
set -euo pipefail

packages=(
  postgresql-15 postgresql-client-15
  redis-server redis-tools
  nginx-light
  prometheus prometheus-postgres-exporter prometheus-redis-exporter prometheus-node-exporter
  iproute2 openssl curl procps psmisc
  default-jdk-headless
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-servers: all packages present"
else
  echo "install-test-servers: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their own copies of the servers: the suite starts
  # its own instances from rendered files.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Stop any instance a package managed to start anyway; the suite runs its own.
for svc in postgresql redis-server nginx prometheus prometheus-node-exporter prometheus-postgres-exporter prometheus-redis-exporter; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
pkill -x redis-server 2>/dev/null || true
