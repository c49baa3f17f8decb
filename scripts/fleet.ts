/**
 * The fleet command: `npm run fleet -- <command>` (scripts/fleet.cjs runs the
 * compiled form of this file). Exit status: 0 done (status: healthy), 2 status
 * unhealthy, 1 an error; psql, redis-cli and logs exit as the remote command.
 */
import { join } from "node:path";
import { defaultFleetDeps, runFleet } from "../lib/fleetcli/cli";

// Compiled into bin/fleet/scripts/, run from scripts/ by ts-node: the repository is found by its package.json either way.
const projectDir = __dirname.includes(join("bin", "fleet")) ? join(__dirname, "..", "..", "..") : join(__dirname, "..");

runFleet(process.argv.slice(2), defaultFleetDeps(projectDir)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`fleet: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
