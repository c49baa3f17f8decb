#!/usr/bin/env bash
# Tears the local fleet down. Data volumes are kept unless the stack sets
# deleteDataOnDestroy: true (Pulumi.local.yaml does). Extra arguments go to
# `pulumi destroy`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v npm >/dev/null 2>&1 || { echo "down:local needs Node.js 20 or later with npm: https://nodejs.org/en/download" >&2; exit 1; }
[ -x node_modules/.bin/pulumi ] || npm ci --no-audit --no-fund
# The Pulumi CLI of the version package.json pins (the `pulumi` npm package).
export PATH="$PWD/node_modules/.bin:$PATH"
export PULUMI_BACKEND_URL="file://$PWD/.state/backend"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-synaxic-local}"
if [ ! -d .state/backend ] || ! pulumi stack select local >/dev/null 2>&1; then
  echo "down:local: there is no local stack in .state/backend, so nothing to tear down"
  exit 0
fi
docker info >/dev/null 2>&1 || { echo "down:local needs the running Docker engine that up:local used (docker info failed)" >&2; exit 1; }
pulumi destroy --yes --stack local "$@"
