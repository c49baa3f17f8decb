#!/usr/bin/env bash
# Brings up the whole fleet (main and replica-1) on this machine's Docker
# engine, with state in a project-local file backend. Needs Docker and Node.js
# with npm; no cloud account. The Pulumi CLI comes with `npm ci` (the `pulumi`
# npm package, pinned in package.json, fetches that CLI version into
# ~/.pulumi/versions on first use). Unless Pulumi.local.yaml names an
# appImage, the program builds the stand-in app (standin-app/) first, with npm
# and docker. Extra arguments go to `pulumi up`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v npm >/dev/null 2>&1 || { echo "up:local needs Node.js 20 or later with npm: https://nodejs.org/en/download" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "up:local needs a running Docker engine (docker info failed): install Docker Engine (https://docs.docker.com/engine/install/) and start it" >&2; exit 1; }
[ -x node_modules/.bin/pulumi ] || npm ci --no-audit --no-fund
export PATH="$PWD/node_modules/.bin:$PATH"

mkdir -p .state/backend
export PULUMI_BACKEND_URL="file://$PWD/.state/backend"
# A passphrase for the local stack's secrets. Set your own to keep them from
# anyone who can read .state/; the default only suits a throwaway local fleet.
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-synaxic-local}"

pulumi stack select --create local
# Unset reads as the empty default Pulumi.yaml declares.
if [ -z "$(pulumi config get googleClientSecret 2>/dev/null)" ]; then
  # Google login needs real OAuth credentials; everything else runs without.
  pulumi config set --secret googleClientSecret local-placeholder-not-a-real-secret
fi
pulumi up --yes --stack local "$@"
echo "balancer: $(pulumi stack output balancerUrl --stack local)"
