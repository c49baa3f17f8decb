/**
 * Prometheus, promtool and node_exporter (Debian's binaries) for integration
 * tests: start/stop on a rig host and small HTTP API helpers.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { waitFor, type Host } from "./net";

export const PROMETHEUS_BIN = "/usr/bin/prometheus";
export const PROMTOOL_BIN = "/usr/bin/promtool";
export const NODE_EXPORTER_BIN = "/usr/bin/prometheus-node-exporter";

/** Runs promtool (with `input` on stdin); resolves with its output and exit code, never rejects on a non-zero exit. */
export function promtool(args: readonly string[], opts: { cwd?: string; input?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL_BIN, [...args], { cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}

async function killGroup(proc: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!proc?.pid || proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  try {
    process.kill(-proc.pid, signal);
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-proc.pid!, "SIGKILL");
    } catch {
      /* gone */
    }
  }, 5000);
  await gone;
  clearTimeout(timer);
}

export interface PromVectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface PromTarget {
  labels: Record<string, string>;
  scrapePool: string;
  scrapeUrl: string;
  health: "up" | "down" | "unknown";
  lastError: string;
}

export interface PromAlert {
  labels: Record<string, string>;
  state: "pending" | "firing" | "inactive";
  value: string;
}

export class PrometheusServer {
  private proc: ChildProcess | undefined;
  readonly url: string;

  constructor(
    readonly host: Host,
    readonly configFile: string,
    readonly dataDir: string,
    readonly port = 9090,
    /** More flags, e.g. a short --rules.alert.resend-delay. */
    readonly extraArgs: readonly string[] = [],
  ) {
    this.url = `http://${host.ip}:${port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async start(): Promise<this> {
    const { proc, log } = this.host.spawnDaemon("prometheus", [
      PROMETHEUS_BIN,
      `--config.file=${this.configFile}`,
      `--storage.tsdb.path=${this.dataDir}`,
      `--web.listen-address=${this.host.ip}:${this.port}`,
      "--storage.tsdb.retention.time=1h",
      "--log.level=info",
      ...this.extraArgs,
    ]);
    this.proc = proc;
    await waitFor(`prometheus on ${this.host.name} (log ${log})`, async () => {
      if (proc.exitCode !== null) throw new Error(`prometheus exited with ${proc.exitCode}; see ${log}`);
      const r = await fetch(`${this.url}/-/ready`, { signal: AbortSignal.timeout(1000) });
      return r.ok;
    }, 30_000, 100);
    return this;
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    await killGroup(proc, "SIGTERM");
  }

  private async api<T>(path: string): Promise<T> {
    const r = await fetch(`${this.url}/api/v1/${path}`, { signal: AbortSignal.timeout(5000) });
    const body = (await r.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`prometheus ${path}: ${body.error ?? r.status}`);
    return body.data;
  }

  async query(expr: string): Promise<PromVectorSample[]> {
    const data = await this.api<{ resultType: string; result: PromVectorSample[] }>(`query?query=${encodeURIComponent(expr)}`);
    return data.result;
  }

  async targets(): Promise<PromTarget[]> {
    const data = await this.api<{ activeTargets: PromTarget[] }>("targets?state=active");
    return data.activeTargets;
  }

  async alerts(): Promise<PromAlert[]> {
    const data = await this.api<{ alerts: PromAlert[] }>("alerts");
    return data.alerts;
  }

  async ruleGroups(): Promise<{ name: string; file: string; rules: { name: string; type: string; health: string; lastError?: string }[] }[]> {
    const data = await this.api<{ groups: { name: string; file: string; rules: { name: string; type: string; health: string; lastError?: string }[] }[] }>("rules");
    return data.groups;
  }
}

export class NodeExporter {
  private proc: ChildProcess | undefined;
  readonly url: string;

  constructor(
    readonly host: Host,
    readonly textfileDir: string,
    readonly port = 9100,
  ) {
    this.url = `http://${host.ip}:${port}`;
  }

  get address(): string {
    return `${this.host.ip}:${this.port}`;
  }

  /** Starts node_exporter with only the collectors the alerts use (filesystem, textfile). */
  async start(): Promise<this> {
    const { proc, log } = this.host.spawnDaemon("node-exporter", [
      NODE_EXPORTER_BIN,
      `--web.listen-address=${this.address}`,
      "--collector.disable-defaults",
      "--collector.filesystem",
      "--collector.textfile",
      `--collector.textfile.directory=${this.textfileDir}`,
    ]);
    this.proc = proc;
    await waitFor(`node_exporter on ${this.host.name} (log ${log})`, async () => {
      if (proc.exitCode !== null) throw new Error(`node_exporter exited with ${proc.exitCode}; see ${log}`);
      const r = await fetch(`${this.url}/metrics`, { signal: AbortSignal.timeout(2000) });
      return r.ok;
    }, 15_000, 100);
    return this;
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    await killGroup(proc, "SIGTERM");
  }
}
