/**
 * `npm run fleet -- <command>`: one command for the fleet's day-to-day work.
 * status (lib/status), logs, psql, redis-cli and restart over SSH with each
 * host's pinned key (lib/status/runner.ts SshExec), up and preview across
 * the stacks (deploy.ts). Everything outside (Pulumi, ssh, the terminal)
 * comes in through FleetDeps, so tests run the command's own code path.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { defaultDeps as statusDefaults, EXIT, readControlExpectation, readFleetOutputs, runStatus } from "../status/cli";
import type { ControlExpectation } from "../status/types";
import { ConnectionError, StackOutputError, UsageError } from "../status/errors";
import { fleetDatabase, listedReplicas, pulumiStackOutputs, replicaStackName, sshTargetOf, type ReadStackOutputs } from "../status/outputs";
import { SshExec, type ExecResult, type SshMode, type SshOptions, type SshTarget } from "../status/runner";
import { replicaCredentialsSchema } from "../fleetOutputs";
import { automationWorkspace, deployFleet, failureLines, type FleetWorkspace } from "./deploy";
import {
  fleetService,
  logsArgv,
  psqlSessionArgv,
  redisFromFileArgv,
  redisFromStdinArgv,
  redisSessionDockerArgv,
  restartArgv,
  stashArgv,
  stashedPath,
  unstashArgv,
} from "./remote";

export const FLEET_USAGE = `Usage: npm run fleet -- <command> [options]

Commands:
  status                        replication, timeline, uptime, archiver and backups of every host
                                (npm run fleet -- status --help)
  logs <host> <service>         the service's container log (--tail N, default 100; -f to follow;
                                --timestamps)
  psql [host]                   psql as postgres in the host's PostgreSQL container
                                (default: the primary; --db NAME, default the app's database)
  redis-cli [host] [-- args]    redis-cli over TLS as the ACL admin user in the host's Redis
                                container (default: the Redis master); the password never
                                appears on a command line
  restart <host> <service>      docker restart of one of the fleet's service containers
  up                            pulumi up of every stack in order: the control stack (when the
                                main stack names one), main, then each replica; stops at the
                                first failure
  preview                       the same order, pulumi preview

Options of every command:
  --main <stack>       the main stack, e.g. acme/synaxic/main (default: $SYNAXIC_MAIN_STACK)
  --replica <stack>    a replica stack (repeatable); default: one per replica the main stack
                       lists, named after it beside the main stack (acme/synaxic/replica-1)
  --identity <file>    SSH private key (default: the agent at SSH_AUTH_SOCK)
  --timeout <seconds>  time limit of a non-interactive command on a host (default 60)
  --cwd <dir>          up/preview: the Pulumi project directory (default: this repository)
  --quiet              up/preview: only each stack's summary, not the engine's output
  -h, --help           this help

Hosts are main and the replicas' names (replica-1, ...). Services: postgres, redis, app,
nginx, prometheus, alertmanager, grafana, node-exporter, postgres-exporter, redis-exporter,
pgbackrest, backup, redis-backup.
`;

/** What a remote session needs from SSH (SshExec, or a stand-in in tests). */
export interface FleetSsh {
  exec(host: string, argv: readonly string[], stdin: string): Promise<ExecResult>;
  attach(host: string, argv: readonly string[], mode: SshMode & { stdin: "inherit" | "ignore" }): Promise<number>;
  pipeThrough(host: string, argv: readonly string[], first: string, input: NodeJS.ReadableStream): Promise<number>;
  close(): void;
}

export interface FleetDeps {
  readStackOutputs: ReadStackOutputs;
  ssh(targets: SshTarget[], opts: SshOptions): FleetSsh;
  workspace(workDir: string): Promise<FleetWorkspace>;
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
  /** The repository: the default Pulumi project directory. */
  projectDir: string;
}

export function defaultFleetDeps(projectDir: string): FleetDeps {
  const s = statusDefaults();
  return {
    readStackOutputs: pulumiStackOutputs(),
    ssh: (targets, opts) => new SshExec(targets, opts),
    workspace: automationWorkspace,
    stdin: process.stdin,
    stdout: s.stdout,
    stderr: s.stderr,
    env: process.env,
    projectDir,
  };
}

interface CommonOptions {
  mainStack: string;
  replicaStacks: string[];
  identityFile?: string;
  timeoutSeconds: number;
  cwd?: string;
  quiet: boolean;
  help: boolean;
  positional: string[];
  /** After "--". */
  rest: string[];
  tail: number | "all";
  follow: boolean;
  timestamps: boolean;
  db?: string;
}

const STACK = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+){0,2}$/;
const NAME = /^[a-z][a-z0-9-]{0,62}$/;

function parseCommon(command: string, argv: readonly string[], env: FleetDeps["env"]): CommonOptions {
  const o: CommonOptions = { mainStack: "", replicaStacks: [], timeoutSeconds: 60, quiet: false, help: false, positional: [], rest: [], tail: 100, follow: false, timestamps: false };
  const allowed: Record<string, readonly string[]> = {
    logs: ["--tail", "-n", "--follow", "-f", "--timestamps"],
    psql: ["--db"],
    up: ["--cwd", "--quiet"],
    preview: ["--cwd", "--quiet"],
  };
  const valued = new Set(["--main", "--replica", "--identity", "--timeout", "--cwd", "--tail", "-n", "--db"]);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      o.rest = argv.slice(i + 1) as string[];
      break;
    }
    if (arg === "-h" || arg === "--help") {
      o.help = true;
      continue;
    }
    if (!arg.startsWith("-")) {
      o.positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const common = ["--main", "--replica", "--identity", "--timeout"];
    if (!common.includes(name) && !(allowed[command] ?? []).includes(name)) throw new UsageError(`unknown option ${name} for ${command}`);
    let value: string | undefined;
    if (valued.has(name)) {
      if (eq > 0 && arg.startsWith("--")) value = arg.slice(eq + 1);
      else {
        value = argv[i + 1];
        if (value === undefined || value.startsWith("--")) throw new UsageError(`option ${name} needs a value`);
        i++;
      }
      if (value === "") throw new UsageError(`option ${name} needs a value`);
    }
    switch (name) {
      case "--main":
        if (!STACK.test(value!)) throw new UsageError(`--main: ${JSON.stringify(value)} is not a stack name (e.g. acme/synaxic/main)`);
        o.mainStack = value!;
        break;
      case "--replica":
        if (!STACK.test(value!)) throw new UsageError(`--replica: ${JSON.stringify(value)} is not a stack name (e.g. acme/synaxic/replica-1)`);
        if (!o.replicaStacks.includes(value!)) o.replicaStacks.push(value!);
        break;
      case "--identity":
        o.identityFile = value!;
        break;
      case "--timeout": {
        const n = Number(value);
        if (!/^\d+(\.\d+)?$/.test(value!) || n < 1) throw new UsageError(`--timeout: ${JSON.stringify(value)} is not a number of seconds (at least 1)`);
        o.timeoutSeconds = n;
        break;
      }
      case "--cwd":
        o.cwd = value!;
        break;
      case "--quiet":
        o.quiet = true;
        break;
      case "--tail":
      case "-n":
        if (value === "all") o.tail = "all";
        else if (/^\d{1,7}$/.test(value!)) o.tail = Number(value);
        else throw new UsageError(`${name}: ${JSON.stringify(value)} is not a number of lines (or all)`);
        break;
      case "--follow":
      case "-f":
        o.follow = true;
        break;
      case "--timestamps":
        o.timestamps = true;
        break;
      case "--db":
        if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(value!)) throw new UsageError(`--db: ${JSON.stringify(value)} is not a database name`);
        o.db = value!;
        break;
    }
  }
  if (!o.mainStack && env.SYNAXIC_MAIN_STACK) {
    if (!STACK.test(env.SYNAXIC_MAIN_STACK)) throw new UsageError(`SYNAXIC_MAIN_STACK: ${JSON.stringify(env.SYNAXIC_MAIN_STACK)} is not a stack name`);
    o.mainStack = env.SYNAXIC_MAIN_STACK;
  }
  if (!o.help && !o.mainStack) throw new UsageError("--main <stack> is required (the main stack, e.g. acme/synaxic/main), or SYNAXIC_MAIN_STACK in the environment");
  return o;
}

function positionals(o: CommonOptions, command: string, min: number, max: number, names: string): string[] {
  if (o.positional.length < min || o.positional.length > max) throw new UsageError(`${command} takes ${names}`);
  for (const p of o.positional) if (!NAME.test(p)) throw new UsageError(`${JSON.stringify(p)} is not a host or service name`);
  return o.positional;
}

/** A host of the fleet with how to reach it, and what the stacks say about its role. */
interface HostInfo {
  /** The stack it was read from. */
  stack: string;
  target: SshTarget;
  outputs: Record<string, unknown>;
}

interface Fleet {
  main: Record<string, unknown>;
  hosts: Map<string, HostInfo>;
}

/** Reads the main stack and the stack of `only` (or, without it, of every replica). */
async function readFleet(o: CommonOptions, deps: FleetDeps, only?: string): Promise<Fleet> {
  const main = await deps.readStackOutputs(o.mainStack);
  const listed = listedReplicas(o.mainStack, main);
  const hosts = new Map<string, HostInfo>([["main", { stack: o.mainStack, target: sshTargetOf(o.mainStack, main, "main"), outputs: main }]]);
  if (only === "main") return { main, hosts };
  if (only !== undefined && !listed.includes(only)) {
    throw new UsageError(`no host ${only} in the fleet of ${o.mainStack} (hosts: ${["main", ...listed].join(", ")})`);
  }
  let replicas: { stack: string; outputs: Record<string, unknown> }[];
  if (only !== undefined && o.replicaStacks.length === 0) {
    const stack = replicaStackName(o.mainStack, only);
    replicas = [{ stack, outputs: await deps.readStackOutputs(stack) }];
  } else {
    replicas = (await readFleetOutputs(o.mainStack, o.replicaStacks, deps.readStackOutputs, main)).replicas;
  }
  for (const r of replicas) {
    const t = sshTargetOf(r.stack, r.outputs, "replica");
    hosts.set(t.name, { stack: r.stack, target: t, outputs: r.outputs });
  }
  if (only !== undefined && !hosts.has(only)) throw new UsageError(`none of the replica stacks given runs ${only}`);
  return { main, hosts };
}

/** The control stack's decision when the host stacks name one (as the status command reads it); null without one. */
async function fleetControl(fleet: Fleet, deps: FleetDeps): Promise<ControlExpectation | null> {
  return readControlExpectation(undefined, [...fleet.hosts.values()].map((h) => ({ stack: h.stack, outputs: h.outputs })), deps.readStackOutputs);
}

/** The PostgreSQL primary: the control stack's, else a replica whose stack says promoted, else main. */
export function primaryHost(fleet: Fleet, control: ControlExpectation | null = null): string {
  if (control) return control.primary;
  for (const [name, h] of fleet.hosts) if (name !== "main" && h.outputs.postgresMode === "promoted") return name;
  return "main";
}

/** The Redis master: the primary's host under a control stack, else a replica whose stack says redisRole master, else main. */
export function redisMasterHost(fleet: Fleet, control: ControlExpectation | null = null): string {
  if (control) return control.primary;
  for (const [name, h] of fleet.hosts) if (name !== "main" && h.outputs.redisRole === "master") return name;
  return "main";
}

/** The default host of psql and redis-cli, which must be a host whose stack was read. */
function readHost(fleet: Fleet, host: string): HostInfo {
  const h = fleet.hosts.get(host);
  if (!h) throw new UsageError(`the control stack names ${host} as the primary, but none of the replica stacks given runs it: name its stack with --replica, or the host`);
  return h;
}

function ports(main: Record<string, unknown>): { postgres: number; redis: number } {
  const p = (main.fleet as { ports?: { postgres?: unknown; redis?: unknown } } | undefined)?.ports;
  if (typeof p?.postgres !== "number" || typeof p.redis !== "number") throw new StackOutputError('main stack: output "fleet.ports" is missing (run `pulumi up` on it with this version of the program)');
  return { postgres: p.postgres, redis: p.redis };
}

function redisAdmin(mainStack: string, main: Record<string, unknown>): { user: string; password: string } {
  const user = (main.fleet as { redisUsers?: { admin?: unknown } } | undefined)?.redisUsers?.admin;
  const creds = replicaCredentialsSchema.pick({ redisAdmin: true }).safeParse(main.replicaCredentials);
  if (typeof user !== "string" || !/^[A-Za-z0-9_-]+$/.test(user)) throw new StackOutputError(`stack ${mainStack}: output "fleet.redisUsers.admin" is missing or malformed`);
  // Never echo the value: it is secret.
  if (!creds.success) throw new StackOutputError(`stack ${mainStack}: output "replicaCredentials.redisAdmin" is missing or malformed`);
  return { user, password: creds.data.redisAdmin };
}

function checkIdentity(o: CommonOptions, env: FleetDeps["env"]): void {
  if (o.identityFile) {
    if (!existsSync(o.identityFile)) throw new UsageError(`--identity ${o.identityFile}: no key file there`);
  } else if (!env.SSH_AUTH_SOCK) {
    throw new UsageError("no SSH identity: start an ssh-agent holding the fleet's key (SSH_AUTH_SOCK) or give --identity <private key file>");
  }
}

/** Runs the fleet command; resolves with the exit status. */
export async function runFleet(argv: readonly string[], deps: FleetDeps): Promise<number> {
  const [command, ...args] = argv;
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    deps.stdout(FLEET_USAGE);
    return command === undefined ? EXIT.error : EXIT.healthy;
  }
  if (command === "status") {
    return runStatus(args, { readStackOutputs: deps.readStackOutputs, connect: statusDefaults().connect, stdout: deps.stdout, stderr: deps.stderr, env: deps.env });
  }
  const fail = (message: string, hint = false): number => {
    deps.stderr(`fleet ${command}: ${message}\n${hint ? "Run with --help for usage.\n" : ""}`);
    return EXIT.error;
  };
  const known = ["logs", "psql", "redis-cli", "restart", "up", "preview"];
  if (!known.includes(command)) return fail(`unknown command ${JSON.stringify(command)} (commands: status, ${known.join(", ")})`, true);

  let o: CommonOptions;
  try {
    o = parseCommon(command, args, deps.env);
    if (o.help) {
      deps.stdout(FLEET_USAGE);
      return EXIT.healthy;
    }
    if (command === "up" || command === "preview") {
      if (o.positional.length) throw new UsageError(`${command} takes no arguments (the stacks come from --main and the main stack's replicas)`);
      return await deploy(command, o, deps);
    }
    checkIdentity(o, deps.env);
    switch (command) {
      case "logs":
        return await logs(o, deps);
      case "restart":
        return await restart(o, deps);
      case "psql":
        return await psql(o, deps);
      default:
        return await redisCli(o, deps);
    }
  } catch (e) {
    if (e instanceof UsageError) return fail(e.message, true);
    if (e instanceof StackOutputError || e instanceof ConnectionError) return fail(e.message);
    return fail(`${e instanceof Error ? e.message : String(e)}`);
  }
}

async function withSsh<T>(o: CommonOptions, deps: FleetDeps, target: SshTarget, fn: (ssh: FleetSsh) => Promise<T>): Promise<T> {
  const ssh = deps.ssh([target], { identityFile: o.identityFile, timeoutSeconds: o.timeoutSeconds });
  try {
    return await fn(ssh);
  } finally {
    ssh.close();
  }
}

async function logs(o: CommonOptions, deps: FleetDeps): Promise<number> {
  const [host, svc] = positionals(o, "logs", 2, 2, "<host> <service>");
  const service = fleetService(svc!);
  const fleet = await readFleet(o, deps, host);
  const argv = logsArgv(host!, service, { tail: o.tail, follow: o.follow, timestamps: o.timestamps });
  return withSsh(o, deps, fleet.hosts.get(host!)!.target, (ssh) => ssh.attach(host!, argv, { stdin: "ignore", untimed: o.follow }));
}

async function restart(o: CommonOptions, deps: FleetDeps): Promise<number> {
  const [host, svc] = positionals(o, "restart", 2, 2, "<host> <service>");
  // Refused before anything is read or reached.
  const service = fleetService(svc!);
  const fleet = await readFleet(o, deps, host);
  return withSsh(o, deps, fleet.hosts.get(host!)!.target, async (ssh) => {
    const r = await ssh.exec(host!, restartArgv(host!, service), "");
    if (r.code !== 0) {
      deps.stderr(`fleet restart: docker restart on ${host} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}\n`);
      return EXIT.error;
    }
    deps.stdout(`restarted ${r.stdout.trim()} on ${host}\n`);
    return EXIT.healthy;
  });
}

async function psql(o: CommonOptions, deps: FleetDeps): Promise<number> {
  const [given] = positionals(o, "psql", 0, 1, "at most one host");
  const fleet = await readFleet(o, deps, given);
  const host = given ?? primaryHost(fleet, await fleetControl(fleet, deps));
  const tty = deps.stdin.isTTY === true;
  const argv = psqlSessionArgv(host, { port: ports(fleet.main).postgres, database: o.db ?? fleetDatabase(fleet.main) ?? "postgres", tty, args: o.rest });
  if (!given) deps.stderr(`fleet psql: the primary is ${host}\n`);
  return withSsh(o, deps, readHost(fleet, host).target, (ssh) => ssh.attach(host, argv, { stdin: "inherit", tty, untimed: true }));
}

async function redisCli(o: CommonOptions, deps: FleetDeps): Promise<number> {
  const [given] = positionals(o, "redis-cli", 0, 1, "at most one host (redis-cli's own arguments go after --)");
  const fleet = await readFleet(o, deps, given);
  const host = given ?? redisMasterHost(fleet, await fleetControl(fleet, deps));
  const admin = redisAdmin(o.mainStack, fleet.main);
  const tty = deps.stdin.isTTY === true;
  const docker = redisSessionDockerArgv(host, { port: ports(fleet.main).redis, user: admin.user, tty, args: o.rest });
  if (!given) deps.stderr(`fleet redis-cli: the Redis master is ${host}\n`);
  return withSsh(o, deps, readHost(fleet, host).target, async (ssh) => {
    if (!tty) return ssh.pipeThrough(host, redisFromStdinArgv(docker), `${admin.password}\n`, deps.stdin);
    // A terminal session's standard input is the terminal: the password goes first, on its own connection, into a 0600 file.
    const stash = await ssh.exec(host, stashArgv(), admin.password);
    if (stash.code !== 0) throw new Error(`could not prepare the session on ${host} (exit ${stash.code}): ${stash.stderr.trim()}`);
    const file = stashedPath(stash.stdout);
    try {
      return await ssh.attach(host, redisFromFileArgv(file, docker), { stdin: "inherit", tty: true, untimed: true });
    } finally {
      await ssh.exec(host, unstashArgv(file), "").catch(() => undefined);
    }
  });
}

async function deploy(kind: "up" | "preview", o: CommonOptions, deps: FleetDeps): Promise<number> {
  const workDir = resolve(o.cwd ?? deps.projectDir);
  if (!existsSync(join(workDir, "Pulumi.yaml"))) throw new UsageError(`no Pulumi.yaml in ${workDir}: give the project directory with --cwd`);
  try {
    const ws = await deps.workspace(workDir);
    const outcomes = await deployFleet(ws, { kind, mainStack: o.mainStack, replicaStacks: o.replicaStacks, showOutput: !o.quiet }, { stdout: deps.stdout, stderr: deps.stderr, now: () => performance.now() });
    return outcomes.length > 0 && outcomes.every((x) => x.ok) ? EXIT.healthy : EXIT.error;
  } catch (e) {
    // Before any stack ran: selecting the main stack or reading its config failed.
    const message = e instanceof Error ? e.message : String(e);
    if (/ENOENT: pulumi\b/.test(message)) throw new Error("the Pulumi CLI (pulumi) is not on PATH");
    throw new Error(`cannot read the main stack ${o.mainStack}: ${failureLines(message).join(" | ")}`);
  }
}
