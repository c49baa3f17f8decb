#!/usr/bin/env bash
# Every test: unit and Pulumi mocks, real servers in network namespaces, and,
# when the Pulumi engine is installed on this machine, the real-engine tier
# (test/engine/README.md). Ends with one "N passed, N failed" line.
#
# The engine tier runs beside the other two: most of its time is spent
# waiting on the Pulumi CLI, SSH and the hosts' Docker engines, and its rigs
# take network namespaces and /24s of their own (test/rig/net.ts). Its output
# goes to .state/engine-tier.log and is printed, whole, when it ends.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .state
rm -f .state/vitest-report.json .state/vitest-engine-report.json .state/engine-tier.log
status=0

engine_pid=""
if missing=$(npx ts-node --transpile-only test/engine/locate.ts); then
  echo "engine tier: started beside the unit and integration tiers (output: .state/engine-tier.log, printed when it ends)"
  # In a process group of its own (setsid), so that a stopped run (Ctrl-C,
  # CI's timeout) can stop all of it; its own hooks remove its hosts.
  # Its two files (the lifecycle fleet, the local stack) have rigs of their
  # own and run side by side too (two workers).
  setsid bash -c 'bash test/engine/prepare.sh &&
    exec npx vitest run --project engine --maxWorkers=2 --outputFile.json=.state/vitest-engine-report.json' \
    > .state/engine-tier.log 2>&1 &
  engine_pid=$!
  trap 'kill -TERM -- "-$engine_pid" 2>/dev/null; exit 130' INT TERM
else
  echo "ENGINE TIER SKIPPED: the Pulumi engine is not installed here; missing:"
  printf '  %s\n' $missing
fi

npx vitest run --project unit --project integration "$@" || status=$?

if [ -n "$engine_pid" ]; then
  echo "engine tier: waiting for it to end"
  engine_status=0
  wait "$engine_pid" || engine_status=$?
  echo "----- engine tier (exit $engine_status) -----"
  cat .state/engine-tier.log
  echo "----- end of engine tier -----"
  [ "$engine_status" -eq 0 ] || status=$engine_status
fi

node -e '
  const fs = require("fs");
  let passed = 0, failed = 0;
  for (const f of [".state/vitest-report.json", ".state/vitest-engine-report.json"]) {
    if (!fs.existsSync(f)) continue;
    const r = JSON.parse(fs.readFileSync(f, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests + (r.numFailedTestSuites > 0 && r.numFailedTests === 0 ? r.numFailedTestSuites : 0);
  }
  console.log(`tests: ${passed} passed, ${failed} failed`);
' || true
exit "$status"
