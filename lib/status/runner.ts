/**
 * The production HostRunner: each host is reached with the system `ssh`,
 * its host key pinned from the stack's `hostKey` output, and the servers are
 * asked through `docker exec` into their containers — psql as the postgres
 * OS user over the local socket, redis-cli over TLS on loopback as the admin
 * user. SQL and the Redis password travel on standard input; the command
 * lines (built with the quoting helper) hold neither.
 */
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { containerName } from "../addresses";
import { sh } from "../shell";
import { psqlScriptArgv } from "../../templates/postgres-sql";
import { REDIS_CONTAINER_PATHS } from "../../templates/redis";
import { CommandError, ConnectionError } from "./errors";
import type { HostRunner } from "./gather";
import { backupInfoArgv } from "./backup";
import { redisCliScript } from "./redis";

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs argv on a host with stdin; throws ConnectionError when the host cannot be reached. */
export type HostExec = (host: string, argv: readonly string[], stdin: string) => Promise<ExecResult>;

/** The last lines of a failed command's output, for an error message. */
export function tail(text: string, lines = 3): string {
  const t = text.trim().split(/\r?\n/).slice(-lines).join(" | ");
  return t.length > 0 ? t : "(no output)";
}

/** Removes a secret from text that is about to be shown. */
function redact(text: string, secret: string): string {
  return secret.length > 0 ? text.split(secret).join("***") : text;
}

export interface ContainerRunnerOptions {
  exec: HostExec;
  ports: { postgres: number; redis: number };
  redisAdmin: { user: string; password: string };
}

/** Argv (on the host) that runs SQL from stdin in the host's PostgreSQL container. */
export function postgresExecArgv(host: string, port: number): string[] {
  return ["docker", "exec", "-i", "-u", "postgres", containerName(host, "postgres"), ...psqlScriptArgv({ port })];
}

/** Argv (on the host) that runs redis-cli in the host's Redis container; the password is the first line of stdin. */
export function redisExecArgv(host: string, port: number, user: string, args: readonly string[]): string[] {
  return ["docker", "exec", "-i", containerName(host, "redis"), "sh", "-c", redisCliScript({ caFile: REDIS_CONTAINER_PATHS.caFile, port, user, args })];
}

/** Argv (on the host) that prints the backup repository's contents from the host's PostgreSQL container, as postgres. */
export function backupInfoExecArgv(host: string): string[] {
  return ["docker", "exec", "-u", "postgres", containerName(host, "postgres"), ...backupInfoArgv()];
}

/** A HostRunner over the services' containers on each host. */
export function containerRunner(o: ContainerRunnerOptions): HostRunner {
  return {
    async psql(host, sql) {
      const r = await o.exec(host, postgresExecArgv(host, o.ports.postgres), sql);
      if (r.code !== 0) throw new CommandError(host, "psql", `exit ${r.code}: ${tail(r.stderr || r.stdout)}`);
      return r.stdout;
    },
    async redis(host, args) {
      const pw = o.redisAdmin.password;
      const r = await o.exec(host, redisExecArgv(host, o.ports.redis, o.redisAdmin.user, args), `${pw}\n`);
      if (r.code !== 0) throw new CommandError(host, `redis-cli ${args.join(" ")}`, redact(`exit ${r.code}: ${tail(r.stderr || r.stdout)}`, pw));
      return redact(r.stdout, pw);
    },
    async backupInfo(host) {
      const r = await o.exec(host, backupInfoExecArgv(host), "");
      if (r.code !== 0) throw new CommandError(host, "pgbackrest info", `exit ${r.code}: ${tail(r.stderr || r.stdout)}`);
      return r.stdout;
    },
  };
}

/** How to reach one host over SSH, from its stack's outputs. */
export interface SshTarget {
  /** The fleet's name for the host (main, replica-1, ...). */
  name: string;
  address: string;
  port: number;
  user: string;
  /** The host's public key, "ssh-ed25519 AAAA...". */
  hostKey: string;
}

export interface SshOptions {
  /** Private key file; without it the agent at SSH_AUTH_SOCK provides the identity. */
  identityFile?: string;
  /** Per-command time limit. */
  timeoutSeconds: number;
  /** The ssh client; default `ssh` on PATH. */
  sshBinary?: string;
}

/** known_hosts line pinning a host's key: "addr ssh-ed25519 AAAA" or "[addr]:port ...". */
export function knownHostsLine(t: Pick<SshTarget, "address" | "port" | "hostKey">): string {
  const [type, body] = t.hostKey.trim().split(/\s+/);
  if (!type || !body) throw new Error(`host key ${JSON.stringify(t.hostKey)} is not "<type> <base64>"`);
  const pattern = t.port === 22 ? t.address : `[${t.address}]:${t.port}`;
  return `${pattern} ${type} ${body}\n`;
}

/** How a command runs over SSH: with a terminal (ssh -t) or not, with a time limit or not. */
export interface SshMode {
  /** Allocate a terminal on the host (ssh -t): only when our own stdin is one. */
  tty?: boolean;
  /** No time limit (interactive sessions, `logs -f`); otherwise SshOptions.timeoutSeconds. */
  untimed?: boolean;
}

/** The ssh client's argv (after the program name) for one command on a host. */
export function sshArgv(t: SshTarget, knownHostsFile: string, opts: SshOptions, remoteArgv: readonly string[], mode: SshMode = {}): string[] {
  const asRoot = t.user === "root" ? [] : ["sudo", "-n"];
  // GNU timeout runs its command in the background, where it cannot read a terminal (coreutils timeout --foreground):
  // interactive sessions go without it.
  const limit = mode.untimed ? [] : ["timeout", "--kill-after=5", String(opts.timeoutSeconds)];
  const remote = sh([...asRoot, ...limit, ...remoteArgv]);
  return [
    // ssh(1): -t forces a pseudo-terminal on the remote side; -T disables it.
    mode.tty ? "-t" : "-T",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", `UserKnownHostsFile=${knownHostsFile}`,
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=10",
    "-o", "ServerAliveCountMax=3",
    "-o", "LogLevel=ERROR",
    ...(opts.identityFile ? ["-i", opts.identityFile, "-o", "IdentitiesOnly=yes"] : []),
    "-p", String(t.port),
    "-l", t.user,
    "--",
    t.address,
    remote,
  ];
}

/**
 * Runs commands on hosts with the system ssh. Each host's key is written to
 * its own known_hosts file in a private temporary directory (removed by
 * close()), so only that key is accepted for that host.
 */
export class SshExec {
  private readonly dir: string;
  private readonly knownHosts = new Map<string, string>();

  constructor(
    private readonly targets: readonly SshTarget[],
    private readonly opts: SshOptions,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), "synaxic-status-"));
    chmodSync(this.dir, 0o700);
    for (const t of targets) {
      const file = join(this.dir, `known_hosts-${t.name}`);
      writeFileSync(file, knownHostsLine(t), { mode: 0o600 });
      this.knownHosts.set(t.name, file);
    }
  }

  readonly exec: HostExec = (host, argv, stdin) => {
    const t = this.targets.find((x) => x.name === host);
    const knownHosts = this.knownHosts.get(host);
    if (!t || !knownHosts) return Promise.reject(new Error(`no SSH target for host ${host}`));
    const bin = this.opts.sshBinary ?? "ssh";
    const args = sshArgv(t, knownHosts, this.opts, argv);
    return new Promise<ExecResult>((resolve, reject) => {
      const child = spawn(bin, args, { stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      let timedOut = false;
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      // The remote side has its own `timeout`; this one covers a hung connection.
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill("SIGKILL");
      }, (this.opts.timeoutSeconds + 20) * 1000);
      child.on("error", (e) => {
        clearTimeout(timer);
        reject(new ConnectionError(host, `cannot run ${bin}: ${e.message}`));
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        if (timedOut) reject(new ConnectionError(host, `ssh ${t.user}@${t.address}:${t.port} did not finish within ${this.opts.timeoutSeconds + 20} s`));
        // 255: ssh's own failure (refused, host key mismatch, authentication).
        else if (code === 255) reject(new ConnectionError(host, `ssh ${t.user}@${t.address}:${t.port}: ${tail(stderr)}`));
        else resolve({ code: code ?? 1, stdout, stderr });
      });
      child.stdin.on("error", () => undefined);
      child.stdin.end(stdin);
    });
  };

  /**
   * Runs argv on a host with this process's own standard streams (stdin
   * only when `stdin` is "inherit"); resolves with the exit status. For
   * interactive sessions and streamed output. ssh's own failure (255) is a
   * ConnectionError.
   */
  attach(host: string, argv: readonly string[], mode: SshMode & { stdin: "inherit" | "ignore" }): Promise<number> {
    return this.session(host, argv, mode, mode.stdin);
  }

  /** Like exec, but the standard input is streamed from `input` after `first` (the non-terminal redis-cli session). */
  pipeThrough(host: string, argv: readonly string[], first: string, input: NodeJS.ReadableStream): Promise<number> {
    return this.session(host, argv, { untimed: true }, "pipe", (stdin) => {
      stdin.on("error", () => undefined);
      stdin.write(first);
      input.pipe(stdin);
    });
  }

  /**
   * ssh with this process's standard output, its stderr shown and kept for
   * the error; resolves with the remote exit status, rejects with a
   * ConnectionError when ssh itself fails (255).
   */
  private session(host: string, argv: readonly string[], mode: SshMode, stdin: "inherit" | "ignore" | "pipe", feed?: (stdin: NodeJS.WritableStream) => void): Promise<number> {
    const t = this.targets.find((x) => x.name === host);
    const knownHosts = this.knownHosts.get(host);
    if (!t || !knownHosts) return Promise.reject(new Error(`no SSH target for host ${host}`));
    const bin = this.opts.sshBinary ?? "ssh";
    const args = sshArgv(t, knownHosts, this.opts, argv, mode);
    return new Promise<number>((resolve, reject) => {
      const child = spawn(bin, args, { stdio: [stdin, "inherit", "pipe"] });
      let stderr = "";
      child.stderr!.on("data", (d: Buffer) => {
        stderr += d.toString();
        process.stderr.write(d);
      });
      child.on("error", (e) => reject(new ConnectionError(host, `cannot run ${bin}: ${e.message}`)));
      child.on("close", (code, signal) => {
        if (code === 255) reject(new ConnectionError(host, `ssh ${t.user}@${t.address}:${t.port}: ${tail(stderr)}`));
        else resolve(code ?? (signal ? 128 : 1));
      });
      if (feed && child.stdin) feed(child.stdin);
    });
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
