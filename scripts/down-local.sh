#!/usr/bin/env bash
# Tears the local fleet down. Data volumes are kept unless the stack sets
# deleteDataOnDestroy: true (Pulumi.local.yaml does).
set -euo pipefail
cd "$(dirname "$0")/.."
export PULUMI_BACKEND_URL="file://$PWD/.state/backend"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-synaxic-local}"
pulumi destroy --yes --stack local "$@"
