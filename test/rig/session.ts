/**
 * A long-lived client process (psql, redis-cli) fed on stdin and read line by
 * line: a connection that authenticated once and stays open, as an app's pool
 * holds its connections.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { waitFor } from "./net";

export class PipeSession {
  private lines: string[] = [];
  private partial = "";
  readonly proc: ChildProcess;

  /** Starts `argv` (e.g. `ip netns exec NS psql ...`); `env` is added to this process's environment. */
  constructor(argv: readonly string[], env: Record<string, string> = {}, track?: ChildProcess[]) {
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...env } });
    track?.push(this.proc);
    const take = (d: Buffer) => {
      const parts = (this.partial + d.toString()).split("\n");
      this.partial = parts.pop()!;
      this.lines.push(...parts);
    };
    this.proc.stdout!.on("data", take);
    this.proc.stderr!.on("data", take);
    this.proc.stdin!.on("error", () => undefined);
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Sends `input` and waits for a line matching `until`; returns the lines (stdout and stderr) seen since. */
  async ask(input: string, until: RegExp, timeoutMs = 10_000): Promise<string[]> {
    const from = this.lines.length;
    this.proc.stdin!.write(input);
    await waitFor(`a line matching ${until} (got ${JSON.stringify(this.lines.slice(from))})`, async () => this.lines.slice(from).some((l) => until.test(l)), timeoutMs, 20);
    return this.lines.slice(from);
  }

  close(): void {
    this.proc.stdin!.end();
    this.proc.kill("SIGKILL");
  }
}

/** psql: runs a query that names the backend, then a marker; the backend's "alive:<user>:<pid>" line. */
export async function psqlBackend(s: PipeSession, marker: string): Promise<string | undefined> {
  const out = await s.ask(`SELECT 'alive:' || current_user || ':' || pg_backend_pid();\n\\echo @@${marker}\n`, new RegExp(`^@@${marker}$`));
  return out.find((l) => l.startsWith("alive:"));
}

/** redis-cli: ECHO on the open connection; true when the server answered it. */
export async function redisEcho(s: PipeSession, marker: string): Promise<boolean> {
  const out = await s.ask(`ECHO ${marker}\n`, new RegExp(`^${marker}$|ERR|WRONGPASS|NOAUTH|AUTH failed|closed|refused|Error`));
  return out.includes(marker);
}
