/**
 * The status command (`fleet status`, also `npm run status`): reads the main
 * stack's outputs and those of its replicas' stacks (found from the main
 * stack's fleet.replicas, or named with --replica) and, when they name one,
 * the control stack's (which host is primary, who was fenced), reaches every
 * host, prints the report and exits
 * 0 when the fleet is healthy, 2 when something is wrong, 1 when the check
 * itself could not be made (usage, stack outputs, a host unreachable).
 *
 * Everything outside this module (the Pulumi CLI, ssh, the terminal) comes
 * in through StatusDeps, so tests run the same code path as the command.
 */
import { accessSync, constants, statSync } from "node:fs";
import { CommandError, ConnectionError, StackOutputError, UsageError } from "./errors";
import { buildReport, formatReport, formatReportJson, verdictOf } from "./format";
import { gather, type HostRunner } from "./gather";
import { buildPlan, controlExpectation, controlStackOf, listedReplicas, pulumiStackOutputs, replicaStackName, type ReadStackOutputs, type StatusPlan } from "./outputs";
import { containerRunner, SshExec } from "./runner";
import { DEFAULT_THRESHOLDS, type ControlExpectation, type Thresholds } from "./types";

export const EXIT = { healthy: 0, error: 1, unhealthy: 2 } as const;

export const USAGE = `Usage: npm run fleet -- status --main <stack> [--replica <stack>]... [--control <stack>] [options]
       (npm run status -- ... is the same command)

Checks PostgreSQL and Redis replication across the fleet, and per host the
PostgreSQL timeline, uptime, WAL archiver and, when the fleet backs up, the
newest backup: reads the stacks' outputs (pulumi stack output
--show-secrets), reaches each host over SSH with its pinned host key, and
asks the servers in their containers.

  --main <stack>               the main stack, e.g. acme/synaxic/main
                               (default: $SYNAXIC_MAIN_STACK)
  --replica <stack>            a replica stack to check (repeatable); default: every
                               replica the main stack lists, each in the stack named
                               after it beside the main stack (acme/synaxic/replica-1)
  --control <stack>            the control stack whose primary the fleet is judged against
                               (default: the one the host stacks name in their
                               controlStack output; none: main is the primary)
  --identity <file>            SSH private key (default: the agent at SSH_AUTH_SOCK)
  --json                       print the report as JSON
  --max-lag-bytes <size>       replication lag that counts as a problem (default 16MB)
  --max-replay-lag <seconds>   replay_lag that counts as a problem (default 30)
  --max-redis-offset-lag <size>  Redis offset difference that counts as a problem (default 1MB)
  --max-backup-age <hours>     a newest backup older than this (or none) is a problem
                               (default: backups are shown, not judged)
  --timeout <seconds>          time limit of each command on a host (default 60)
  -h, --help                   this help

Sizes are bytes, or a number with kB, MB or GB (1024-based).
Exit status: 0 healthy, 2 unhealthy, 1 usage error or a host or stack that could not be read.
`;

export interface StatusOptions {
  mainStack: string;
  /** The control stack given with --control; otherwise the one the host stacks name. */
  controlStack?: string;
  replicaStacks: string[];
  identityFile?: string;
  json: boolean;
  thresholds: Thresholds;
  timeoutSeconds: number;
  help: boolean;
}

/** "16MB", "512kB", "1GB" or a plain number of bytes. */
export function parseSize(option: string, text: string): number {
  const m = /^(\d+)\s*(B|kB|KB|MB|GB)?$/.exec(text.trim());
  if (!m) throw new UsageError(`${option}: ${JSON.stringify(text)} is not a size; give bytes or a number with kB, MB or GB, e.g. 16MB`);
  const mult = { B: 1, kB: 1024, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[(m[2] ?? "B") as "B"];
  return Number(m[1]) * mult;
}

function parseSeconds(option: string, text: string): number {
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !Number.isFinite(n)) throw new UsageError(`${option}: ${JSON.stringify(text)} is not a number of seconds`);
  return n;
}

const STACK = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+){0,2}$/;

function stackName(option: string, text: string): string {
  if (!STACK.test(text)) throw new UsageError(`${option}: ${JSON.stringify(text)} is not a stack name (expected <org>/<project>/<stack>, e.g. acme/synaxic/main)`);
  return text;
}

/** Parses the command line; throws UsageError with a message that names the option. */
export function parseStatusArgs(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = {}): StatusOptions {
  const o: StatusOptions = { mainStack: "", replicaStacks: [], json: false, thresholds: { ...DEFAULT_THRESHOLDS }, timeoutSeconds: 60, help: false };
  const withValue = new Set(["--main", "--replica", "--control", "--identity", "--max-lag-bytes", "--max-replay-lag", "--max-redis-offset-lag", "--max-backup-age", "--timeout"]);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h" || arg === "--help") {
      o.help = true;
      continue;
    }
    if (arg === "--json") {
      o.json = true;
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    if (!withValue.has(name)) {
      throw new UsageError(arg.startsWith("-") ? `unknown option ${name}` : `unexpected argument ${JSON.stringify(arg)}: stacks are given with --main and --replica`);
    }
    let value: string | undefined;
    if (eq > 0 && arg.startsWith("--")) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith("--")) throw new UsageError(`option ${name} needs a value`);
      i++;
    }
    if (value === "") throw new UsageError(`option ${name} needs a value`);
    switch (name) {
      case "--main":
        if (o.mainStack) throw new UsageError("--main given twice: there is one main stack");
        o.mainStack = stackName(name, value);
        break;
      case "--replica": {
        const s = stackName(name, value);
        if (o.replicaStacks.includes(s)) throw new UsageError(`--replica ${s} given twice`);
        o.replicaStacks.push(s);
        break;
      }
      case "--control":
        if (o.controlStack) throw new UsageError("--control given twice: there is one control stack");
        o.controlStack = stackName(name, value);
        break;
      case "--identity":
        o.identityFile = value;
        break;
      case "--max-lag-bytes":
        o.thresholds.maxLagBytes = parseSize(name, value);
        break;
      case "--max-replay-lag":
        o.thresholds.maxReplayLagSeconds = parseSeconds(name, value);
        break;
      case "--max-redis-offset-lag":
        o.thresholds.maxRedisOffsetLag = parseSize(name, value);
        break;
      case "--max-backup-age":
        o.thresholds.maxBackupAgeSeconds = parseSeconds(name, value) * 3600;
        break;
      case "--timeout":
        o.timeoutSeconds = parseSeconds(name, value);
        if (o.timeoutSeconds < 1) throw new UsageError("--timeout must be at least 1 second");
        break;
    }
  }
  if (!o.mainStack && env.SYNAXIC_MAIN_STACK) o.mainStack = stackName("SYNAXIC_MAIN_STACK", env.SYNAXIC_MAIN_STACK);
  if (!o.help && !o.mainStack) throw new UsageError("--main <stack> is required (the main stack, e.g. acme/synaxic/main), or SYNAXIC_MAIN_STACK in the environment");
  return o;
}

/** A way to reach the plan's hosts; close() removes whatever it set up. */
export interface Connection {
  runner: HostRunner;
  close(): Promise<void> | void;
}

export interface StatusDeps {
  readStackOutputs: ReadStackOutputs;
  connect(plan: StatusPlan, options: StatusOptions, env: Readonly<Record<string, string | undefined>>): Promise<Connection>;
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
}

/** SSH to each host (identity from --identity or the agent), then docker exec into its containers. */
export async function sshConnect(plan: StatusPlan, options: StatusOptions, env: Readonly<Record<string, string | undefined>>): Promise<Connection> {
  if (options.identityFile) {
    try {
      if (!statSync(options.identityFile).isFile()) throw new Error("not a file");
      accessSync(options.identityFile, constants.R_OK);
    } catch {
      throw new UsageError(`--identity ${options.identityFile}: no readable key file there`);
    }
  } else if (!env.SSH_AUTH_SOCK) {
    throw new UsageError("no SSH identity: start an ssh-agent holding the fleet's key (SSH_AUTH_SOCK) or give --identity <private key file>");
  }
  const ssh = new SshExec(plan.targets, { identityFile: options.identityFile, timeoutSeconds: options.timeoutSeconds });
  return { runner: containerRunner({ exec: ssh.exec, ports: plan.ports, redisAdmin: plan.redisAdmin }), close: () => ssh.close() };
}

export function defaultDeps(): StatusDeps {
  return {
    readStackOutputs: pulumiStackOutputs(),
    connect: sshConnect,
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
  };
}

/**
 * The main stack's outputs and those of the replica stacks: the ones named,
 * or else one per replica the main stack lists, named after it. A replica
 * stack found that way that cannot be read is an error that says how it was
 * named.
 */
export async function readFleetOutputs(
  mainStack: string,
  named: readonly string[],
  read: ReadStackOutputs,
  /** The main stack's outputs when already read. */
  mainOutputs?: Record<string, unknown>,
): Promise<{ main: Record<string, unknown>; replicas: { stack: string; outputs: Record<string, unknown> }[] }> {
  if (named.length > 0) {
    const [main, ...replicas] = await Promise.all([mainOutputs ? Promise.resolve(mainOutputs) : read(mainStack), ...named.map((s) => read(s))]);
    return { main: main!, replicas: named.map((stack, i) => ({ stack, outputs: replicas[i]! })) };
  }
  const main = mainOutputs ?? (await read(mainStack));
  const stacks = listedReplicas(mainStack, main).map((r) => replicaStackName(mainStack, r));
  const replicas = await Promise.all(
    stacks.map(async (stack) => {
      try {
        return { stack, outputs: await read(stack) };
      } catch (e) {
        if (e instanceof StackOutputError) {
          throw new StackOutputError(`${e.message} (the stack of a replica that ${mainStack} lists, named after it; name replica stacks with --replica if they are called otherwise)`);
        }
        throw e;
      }
    }),
  );
  return { main, replicas };
}

/** The control stack's decision: from the stack given, or the one the host stacks name; null for a fleet without one. */
export async function readControlExpectation(
  given: string | undefined,
  hostStacks: readonly { stack: string; outputs: Record<string, unknown> }[],
  read: ReadStackOutputs,
): Promise<ControlExpectation | null> {
  const stack = given ?? controlStackOf(hostStacks);
  if (stack === undefined) return null;
  return controlExpectation(stack, await read(stack));
}

/** Runs the status command; resolves with the exit status. */
export async function runStatus(argv: readonly string[], deps: StatusDeps): Promise<number> {
  const fail = (message: string, hint = false): number => {
    deps.stderr(`status: ${message}\n${hint ? "Run with --help for usage.\n" : ""}`);
    return EXIT.error;
  };
  let options: StatusOptions;
  try {
    options = parseStatusArgs(argv, deps.env);
  } catch (e) {
    if (e instanceof UsageError) return fail(e.message, true);
    throw e;
  }
  if (options.help) {
    deps.stdout(USAGE);
    return EXIT.healthy;
  }

  let plan: StatusPlan;
  let connection: Connection;
  try {
    const { main, replicas } = await readFleetOutputs(options.mainStack, options.replicaStacks, deps.readStackOutputs);
    const control = await readControlExpectation(options.controlStack, [{ stack: options.mainStack, outputs: main }, ...replicas], deps.readStackOutputs);
    plan = buildPlan(options.mainStack, main, replicas, control);
    connection = await deps.connect(plan, options, deps.env);
  } catch (e) {
    if (e instanceof UsageError) return fail(e.message, true);
    if (e instanceof StackOutputError || e instanceof ConnectionError || e instanceof CommandError) return fail(e.message);
    return fail(`internal error: ${e instanceof Error ? e.message : String(e)}`);
  }

  try {
    const facts = await gather(connection.runner, { main: plan.targets[0]!.name, replicas: plan.targets.slice(1).map((t) => t.name) }, { backups: plan.expectation.backups });
    const report = buildReport(plan.expectation, facts, options.thresholds);
    deps.stdout(options.json ? formatReportJson(report) : formatReport(report));
    const verdict = verdictOf(report);
    if (verdict === "incomplete") {
      const hosts = report.problems.filter((p) => p.kind === "host-unreachable").map((p) => p.host);
      deps.stderr(`status: could not reach ${hosts.join(", ")}; the report is incomplete\n`);
      return EXIT.error;
    }
    return verdict === "healthy" ? EXIT.healthy : EXIT.unhealthy;
  } finally {
    await connection.close();
  }
}
