/**
 * The package manager's locks, with this machine's real apt-get: the
 * rendered apt_get function (renderAptGetFunction, used by the Docker
 * install and the firewall script) against another process holding apt's
 * locks, the way cloud-init or unattended-upgrades hold them on a fresh
 * server.
 *
 * apt runs in a sandbox of its own: its status file, lists, cache and lock
 * files are in a temporary directory (Dir::State::status, Dir::State::Lists,
 * Dir::Cache) and it has no sources, so nothing of this machine's package
 * state is read, locked or changed, and nothing is downloaded. The lock
 * holder takes the same kind of lock apt does (fcntl F_SETLK, write lock),
 * from perl, which every Debian system has.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { renderAptGetFunction } from "../../templates/host";

let dir: string;
let sandbox: string[];
const holders: ChildProcess[] = [];

/** struct flock on 64-bit Linux: l_type, l_whence, (pad), l_start, l_len, l_pid, (pad). */
const HOLD = `$| = 1; open(my $fh, ">>", $ARGV[0]) or die "open: $!"; fcntl($fh, F_SETLK, pack("s s x4 q q l x4", F_WRLCK, SEEK_SET, 0, 0, 0)) or die "lock: $!"; print "locked\\n"; sleep $ARGV[1];`;

/** Holds a lock file for `seconds`; resolves once the lock is taken. */
function hold(file: string, seconds: number): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const p = spawn("perl", ["-MFcntl", "-e", HOLD, file, String(seconds)], { stdio: ["ignore", "pipe", "pipe"] });
    holders.push(p);
    let err = "";
    p.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    p.stdout!.on("data", (d: Buffer) => {
      if (d.toString().includes("locked")) resolve(p);
    });
    p.on("exit", (code) => reject(new Error(`lock holder exited ${code} before taking ${file}: ${err}`)));
  });
}

/**
 * Kills a lock holder and waits until it has exited: the kernel drops its
 * lock only then, and the next test's holder takes the same file at once
 * (F_SETLK, no wait).
 */
async function release(holder: ChildProcess): Promise<void> {
  if (holder.exitCode !== null || holder.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => holder.once("exit", () => resolve()));
  holder.kill("SIGKILL");
  await exited;
}

function run(argv: string[], input = ""): Promise<{ code: number | null; out: string; err: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, LC_ALL: "C" } });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out, err, ms: Date.now() - started }));
    child.stdin.end(input);
  });
}

/** The rendered function, called once with the sandbox options and `args`. */
function aptGet(lockTimeoutSeconds: number, args: string[]) {
  const script = `set -euo pipefail\nSUDO=""\n${renderAptGetFunction(lockTimeoutSeconds)}\napt_get "$@"\n`;
  return run(["bash", "-c", script, "apt_get", ...sandbox, ...args]);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "synaxic-apt-"));
  for (const d of ["dpkg", "lists/partial", "cache/archives/partial", "sources.list.d"]) mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, "dpkg", "status"), "");
  writeFileSync(join(dir, "sources.list"), "");
  sandbox = [
    "-o", `Dir::State::status=${join(dir, "dpkg", "status")}`,
    "-o", `Dir::State::Lists=${join(dir, "lists")}`,
    "-o", `Dir::Cache=${join(dir, "cache")}`,
    "-o", `Dir::Etc::sourcelist=${join(dir, "sources.list")}`,
    "-o", `Dir::Etc::sourceparts=${join(dir, "sources.list.d")}`,
  ];
});

afterAll(() => {
  for (const h of holders) h.kill("SIGKILL");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("apt's locks on a busy first boot", () => {
  it("the sandboxed apt-get works when nobody holds a lock (control)", async () => {
    const r = await aptGet(20, ["check"]);
    expect(r.code, r.err).toBe(0);
    expect(r.ms).toBeLessThan(2_000);
  });

  it("apt-get waits for the dpkg lock itself, given DPkg::Lock::Timeout", async () => {
    const holder = await hold(join(dir, "dpkg", "lock-frontend"), 3);
    const r = await aptGet(20, ["check"]);
    await release(holder);
    expect(r.code, r.err).toBe(0);
    expect(r.ms).toBeGreaterThanOrEqual(2_000);
  });

  it("but not for the lists lock that update takes: it fails at once, whatever DPkg::Lock::Timeout says", async () => {
    const holder = await hold(join(dir, "lists", "lock"), 30);
    try {
      const r = await run(["apt-get", "-o", "DPkg::Lock::Timeout=20", ...sandbox, "update"]);
      expect(r.code).toBe(100);
      expect(r.err).toMatch(/Could not get lock .*lists\/lock/);
      expect(r.ms).toBeLessThan(2_000);
    } finally {
      await release(holder);
    }
  });

  it("so apt_get retries update until the lists lock is free", async () => {
    const holder = await hold(join(dir, "lists", "lock"), 3);
    const r = await aptGet(20, ["update"]);
    await release(holder);
    expect(r.code, r.err).toBe(0);
    expect(r.ms).toBeGreaterThanOrEqual(2_000);
  });

  it("a lock held past the timeout fails, saying so and naming the lock and its holder", async () => {
    const holder = await hold(join(dir, "dpkg", "lock-frontend"), 30);
    try {
      const r = await aptGet(2, ["check"]);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/apt-get .* check: the package manager stayed locked for 2s/);
      expect(r.err).toMatch(/Could not get lock .*dpkg\/lock-frontend\. It is held by process \d+ \(perl\)/);
      expect(r.ms).toBeLessThan(10_000);
    } finally {
      await release(holder);
    }
  });
});
