#!/usr/bin/env node
/**
 * Starts the fleet command from its compiled form (bin/fleet/, gitignored),
 * compiling it first when any TypeScript source is newer than the last
 * build: type-checking happens once per change, not on every start.
 * `npm run fleet -- <command>`; `npm run status -- ...` is `fleet status`.
 */
const { execFileSync } = require("node:child_process");
const { existsSync, readdirSync, statSync, writeFileSync } = require("node:fs");
const { join } = require("node:path");

const root = join(__dirname, "..");
const out = join(root, "bin", "fleet");
const stamp = join(out, ".built");
const entry = join(out, "scripts", "fleet.js");

/** The newest modification time among the sources the command is built from. */
function newestSource() {
  let newest = 0;
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts")) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of ["lib", "templates"]) walk(join(root, d));
  for (const f of ["scripts/fleet.ts", "scripts/status.ts", "tsconfig.json", "tsconfig.fleet.json", "package-lock.json"]) newest = Math.max(newest, statSync(join(root, f)).mtimeMs);
  return newest;
}

if (!existsSync(entry) || !existsSync(stamp) || statSync(stamp).mtimeMs < newestSource()) {
  process.stderr.write("fleet: compiling the command (once after each change of its sources)...\n");
  try {
    execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", join(root, "tsconfig.fleet.json")], { cwd: root, stdio: ["ignore", "inherit", "inherit"] });
  } catch {
    process.stderr.write("fleet: the build failed (see above); fix it or run `npm run build:fleet`\n");
    process.exit(1);
  }
  writeFileSync(stamp, `${new Date().toISOString()}\n`);
}
require(entry);
