/**
 * Starts and inspects app stubs (appStub.server.mjs) on rig hosts.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { waitFor, type Host } from "./net";

const SCRIPT = join(__dirname, "appStub.server.mjs");

export interface StubStats {
  name: string;
  read: number;
  write: number;
  health: number;
  metrics: number;
  byMethod: Record<string, number>;
  /** With a database: API-key usage recorded, failed (a standby), and still queued. */
  usageRecorded: number;
  usageFailures: number;
  usagePending: number;
}

export interface JournalEntry {
  id: string;
  method: string;
  path: string;
  host: string;
  at: number;
}

export class AppStub {
  private proc: ChildProcess | undefined;
  readonly journal: string;

  constructor(
    readonly host: Host,
    readonly name: string,
    readonly port: number,
    dir: string,
    /** The app's database, as psql reaches it: the stub then writes where the real app does on reads. */
    private readonly database?: { psql: string; conninfo: string },
  ) {
    this.journal = join(dir, `${name}-journal.jsonl`);
  }

  get address(): string {
    return `${this.host.ip}:${this.port}`;
  }

  get url(): string {
    return `http://${this.address}`;
  }

  /** Starts the stub and waits until its health endpoint answers. */
  async start(): Promise<this> {
    const { proc } = this.host.spawnDaemon(`app-${this.name}`, [
      process.execPath, SCRIPT, "--name", this.name, "--listen", this.address, "--journal", this.journal,
      ...(this.database ? ["--psql", this.database.psql, "--conninfo", this.database.conninfo] : []),
    ]);
    this.proc = proc;
    await waitFor(`app stub ${this.name} on ${this.address}`, async () => {
      if (proc.exitCode !== null) throw new Error(`app stub ${this.name} exited with ${proc.exitCode}`);
      const r = await fetch(`${this.url}/actuator/health`, { signal: AbortSignal.timeout(1000) });
      return r.ok;
    }, 15_000, 50);
    return this;
  }

  /** Kills the stub at once (SIGKILL), as if the app crashed, and waits for it to be gone. */
  kill(): Promise<void> {
    return this.signal("SIGKILL");
  }

  /**
   * Stops the stub as Docker stops the app's container (SIGTERM): it finishes
   * the requests it has, closes its connections and exits
   * (appStub.server.mjs). Waits for the exit.
   */
  terminate(): Promise<void> {
    return this.signal("SIGTERM");
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc?.pid || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    try {
      process.kill(-proc.pid, sig);
    } catch {
      return;
    }
    await gone;
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async stats(): Promise<StubStats> {
    const r = await fetch(`${this.url}/__stub/stats`, { signal: AbortSignal.timeout(5000) });
    if (!r.ok) throw new Error(`stats of ${this.name}: HTTP ${r.status}`);
    return (await r.json()) as StubStats;
  }

  async reset(): Promise<void> {
    const r = await fetch(`${this.url}/__stub/reset`, { method: "POST", signal: AbortSignal.timeout(5000) });
    if (!r.ok) throw new Error(`reset of ${this.name}: HTTP ${r.status}`);
  }

  /** Requests that carried an x-test-id header, in arrival order (read from the file, so it works after a kill). */
  journalEntries(id?: string): JournalEntry[] {
    if (!existsSync(this.journal)) return [];
    const entries = readFileSync(this.journal, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as JournalEntry);
    return id === undefined ? entries : entries.filter((e) => e.id === id);
  }
}

