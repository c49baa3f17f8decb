/**
 * Test network: network namespaces that stand for VPS hosts, joined by a
 * bridge that lives in a namespace of its own. The test process itself gets
 * an address on the same bridge (".254"), so test code can reach every host
 * directly while each host keeps its own source address.
 *
 * Only addresses inside namespaces this module creates are ever used.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { promisify } from "node:util";
import { mkdtempSync, rmSync, openSync, closeSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const run = promisify(execFile);

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface ExecOptions {
  /** Run as this Unix user (via runuser). */
  user?: string;
  input?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  cwd?: string;
  /** Resolve with a non-zero code instead of rejecting. */
  allowFail?: boolean;
}

const PREFIX = "sxt";

async function ip(args: string[]): Promise<void> {
  await run("ip", args, { timeout: 15_000 });
}

/** Removes namespaces and links left over by an earlier run that crashed. */
export async function cleanupStale(): Promise<void> {
  const { stdout } = await run("ip", ["netns", "list"]);
  for (const line of stdout.split("\n")) {
    const ns = line.split(" ")[0];
    if (!ns?.startsWith(PREFIX)) continue;
    const pid = Number(ns.split("-")[1]);
    // Leave namespaces of a run that is still alive (another test process).
    if (pid && pid !== process.pid && isAlive(pid)) continue;
    await killNamespace(ns);
    await run("ip", ["netns", "del", ns]).catch(() => undefined);
  }
  const links = await run("ip", ["-o", "link", "show"]);
  for (const m of links.stdout.matchAll(new RegExp(`^\\d+: (${PREFIX}[^:@]+)`, "gm"))) {
    const name = m[1]!;
    const pid = Number(name.slice(PREFIX.length).split("h")[0]);
    if (pid && pid !== process.pid && isAlive(pid)) continue;
    await run("ip", ["link", "del", name]).catch(() => undefined);
  }
}

/** Third octets k of the 10.213.<k>.0/24 networks live rigs hold (the test process's .254 on a root link). */
async function subnetsInUse(): Promise<Set<number>> {
  const { stdout } = await run("ip", ["-o", "-4", "addr", "show"]);
  return new Set([...stdout.matchAll(/inet 10\.213\.(\d+)\.254\//g)].map((m) => Number(m[1])));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function killNamespace(ns: string): Promise<void> {
  const r = await run("ip", ["netns", "pids", ns]).catch(() => ({ stdout: "" }));
  for (const p of r.stdout.split("\n").filter(Boolean)) {
    try {
      process.kill(Number(p), "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

export class Host {
  readonly procs: ChildProcess[] = [];
  constructor(
    readonly name: string,
    readonly ns: string,
    readonly ip: string,
    readonly ifname: string,
    readonly net: TestNet,
  ) {}

  private argv(argv: readonly string[], opts: ExecOptions): string[] {
    const inner = opts.user ? ["runuser", "-u", opts.user, "--", ...argv] : [...argv];
    return ["netns", "exec", this.ns, ...inner];
  }

  /** Runs a command inside this host's namespace and waits for it. */
  async exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return runWrapped(["ip", ...this.argv(argv, opts)], this.name, argv, opts, 60_000);
  }

  /**
   * Starts a long-running process in this namespace. Its output goes to a log
   * file in the net's work directory; the process is killed by destroy().
   */
  spawnDaemon(label: string, argv: readonly string[], opts: ExecOptions = {}): { proc: ChildProcess; log: string } {
    const log = join(this.net.dir, `${this.name}-${label}.log`);
    const fd = openSync(log, "a");
    const so: SpawnOptions = {
      env: { ...process.env, ...opts.env },
      cwd: opts.cwd,
      stdio: ["ignore", fd, fd],
      detached: true,
    };
    const proc = spawn("ip", this.argv(argv, opts), so);
    closeSync(fd);
    this.procs.push(proc);
    this.net.procs.push(proc);
    return { proc, log };
  }

  /** Takes this host's link down: it stays running but is cut off. */
  async cut(): Promise<void> {
    await ip(["-n", this.ns, "link", "set", this.ifname, "down"]);
  }

  async restore(): Promise<void> {
    await ip(["-n", this.ns, "link", "set", this.ifname, "up"]);
  }
}

export class TestNet {
  readonly hosts = new Map<string, Host>();
  readonly procs: ChildProcess[] = [];
  private destroyed = false;

  private constructor(
    readonly id: string,
    readonly subnet: string,
    readonly switchNs: string,
    readonly rootLink: string,
    readonly dir: string,
  ) {}

  /** Address the test process has on the bridge (an "outside" observer). */
  get rootIp(): string {
    return `${this.subnet}.254`;
  }

  /**
   * Creates a bridge and one namespace per host name, with addresses
   * 10.213.<k>.1, .2, ... in the order given.
   */
  static async create(hostNames: readonly string[]): Promise<TestNet> {
    await cleanupStale();
    const id = `${PREFIX}-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    // Rigs of several test processes run side by side (the engine tier beside
    // the integration tier): take a /24 no live rig holds.
    const used = await subnetsInUse();
    let k = 1 + ((process.pid + Date.now()) % 200);
    for (let n = 0; used.has(k) && n < 200; n++) k = 1 + (k % 200);
    if (used.has(k)) throw new Error("every 10.213.<k>.0/24 test network is in use");
    const subnet = `10.213.${k}`;
    const dir = mkdtempSync(join(tmpdir(), "synaxic-rig-"));
    const switchNs = `${id}-sw`;
    const rootLink = `${PREFIX}${process.pid}h${k}r`;
    const net = new TestNet(id, subnet, switchNs, rootLink, dir);
    try {
      await ip(["netns", "add", switchNs]);
      await ip(["-n", switchNs, "link", "add", "br0", "type", "bridge"]);
      await ip(["-n", switchNs, "link", "set", "br0", "up"]);
      await ip(["-n", switchNs, "link", "set", "lo", "up"]);
      // The test process's own leg on the bridge.
      await ip(["link", "add", rootLink, "type", "veth", "peer", "name", "root0", "netns", switchNs]);
      await ip(["-n", switchNs, "link", "set", "root0", "master", "br0", "up"]);
      await ip(["addr", "add", `${net.rootIp}/24`, "dev", rootLink]);
      await ip(["link", "set", rootLink, "up"]);
      let i = 1;
      for (const name of hostNames) {
        const ns = `${id}-${name}`;
        const hostIp = `${subnet}.${i}`;
        await ip(["netns", "add", ns]);
        await ip(["-n", ns, "link", "set", "lo", "up"]);
        await ip(["-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", `p${i}`, "netns", switchNs]);
        await ip(["-n", switchNs, "link", "set", `p${i}`, "master", "br0", "up"]);
        await ip(["-n", ns, "addr", "add", `${hostIp}/24`, "dev", "eth0"]);
        await ip(["-n", ns, "link", "set", "eth0", "up"]);
        net.hosts.set(name, new Host(name, ns, hostIp, "eth0", net));
        i++;
      }
    } catch (e) {
      await net.destroy();
      throw e;
    }
    return net;
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name} in this net (have ${[...this.hosts.keys()].join(", ")})`);
    return h;
  }

  /** A fresh directory under this net's work directory. */
  mkdir(label: string): string {
    const d = mkdtempSync(join(this.dir, `${label}-`));
    return d;
  }

  writeFile(path: string, content: string | Buffer, mode = 0o644): void {
    writeFileSync(path, content, { mode });
  }

  readLog(path: string): string {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return "";
    }
  }

  /** Kills every process started in the net and removes its namespaces. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const p of this.procs) {
      try {
        if (p.pid) process.kill(-p.pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    for (const h of this.hosts.values()) await killNamespace(h.ns);
    for (const h of this.hosts.values()) await run("ip", ["netns", "del", h.ns]).catch(() => undefined);
    await run("ip", ["link", "del", this.rootLink]).catch(() => undefined);
    await run("ip", ["netns", "del", this.switchNs]).catch(() => undefined);
    if (!process.env.SYNAXIC_KEEP_RIG) rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Runs `full` (argv wrapped to enter a host: `ip netns exec`, `nsenter`)
 * and waits for it; errors name the host and the inner argv.
 */
export function runWrapped(full: readonly string[], hostName: string, argv: readonly string[], opts: ExecOptions, defaultTimeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(full[0]!, full.slice(1), { env: { ...process.env, ...opts.env }, cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? defaultTimeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result = { stdout, stderr, code: code ?? (signal ? 128 : 1) };
      if (result.code !== 0 && !opts.allowFail) {
        reject(new Error(`${hostName}: ${argv.join(" ")} exited ${result.code}${signal ? ` (${signal})` : ""}\n${stderr}${stdout}`));
      } else resolve(result);
    });
    // A command that exits before reading its input must not fail the caller.
    child.stdin!.on("error", () => undefined);
    child.stdin!.end(opts.input ?? "");
  });
}

/** Polls fn until it returns a truthy value or the timeout passes. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 30_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
