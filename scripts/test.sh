#!/usr/bin/env bash
# Every test: unit and Pulumi mocks, real servers in network namespaces, and,
# when the Pulumi engine is installed on this machine, the real-engine tier
# (test/engine/README.md). Ends with one "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .state
rm -f .state/vitest-report.json .state/vitest-engine-report.json
status=0
npx vitest run --project unit --project integration "$@" || status=$?

if missing=$(npx ts-node --transpile-only test/engine/locate.ts); then
  bash test/engine/prepare.sh
  npx vitest run --project engine --outputFile.json=.state/vitest-engine-report.json || status=$?
else
  echo "ENGINE TIER SKIPPED: the Pulumi engine is not installed here; missing:"
  printf '  %s\n' $missing
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
