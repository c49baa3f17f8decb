/**
 * Fleet replication status through ts-node: `ts-node scripts/status.ts --main <stack> [--replica <stack>]...`,
 * the same command as `npm run fleet -- status` (scripts/fleet.ts, compiled), which `npm run status` runs.
 * Exit status 0 healthy, 2 unhealthy, 1 usage error or something unreachable.
 */
import { defaultDeps, runStatus } from "../lib/status/cli";

runStatus(process.argv.slice(2), defaultDeps()).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`status: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
