/**
 * The stacks' outputs the status command works from, read with
 * `pulumi stack output --json --show-secrets`, checked, and turned into a
 * plan: which hosts to reach and how, and what should be running there.
 */
import { execFile } from "node:child_process";
import { z } from "zod";
import { fleetInfoSchema, replicaCredentialsSchema } from "../fleetOutputs";
import { controlInfoSchema } from "../controlInfo";
import { StackOutputError } from "./errors";
import type { SshTarget } from "./runner";
import type { ControlExpectation, ExpectedReplica, FleetExpectation, PostgresMode } from "./types";

/** Reads all outputs of a stack (secrets in plain text). */
export type ReadStackOutputs = (stack: string) => Promise<Record<string, unknown>>;

/** The Pulumi CLI's outputs of a stack. */
export function pulumiStackOutputs(pulumiBinary = "pulumi"): ReadStackOutputs {
  return (stack) =>
    new Promise((resolve, reject) => {
      execFile(pulumiBinary, ["stack", "output", "--json", "--show-secrets", "--stack", stack], { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 }, (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException;
          if (e.code === "ENOENT") return reject(new StackOutputError(`cannot read stack ${stack}: the Pulumi CLI (${pulumiBinary}) is not on PATH`));
          return reject(new StackOutputError(`cannot read stack ${stack}: pulumi stack output failed: ${String(stderr).trim().split("\n").slice(-3).join(" | ") || e.message}`));
        }
        try {
          const v: unknown = JSON.parse(stdout);
          if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
          resolve(v as Record<string, unknown>);
        } catch {
          reject(new StackOutputError(`cannot read stack ${stack}: pulumi stack output did not print a JSON object`));
        }
      });
    });
}

const hostKey = z.string().regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}(\s.*)?$/, { message: 'expected an SSH public key ("ssh-ed25519 AAAA...")' });
const address = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.:-]*$/, { message: "expected a host name or IP address" });
const sshUser = z.string().regex(/^[a-z_][a-z0-9_-]*$/, { message: "expected a Unix user name" });
const sshPort = z.number().int().min(1).max(65535);

const mainSchema = {
  publicAddress: address,
  hostKey,
  sshUser,
  fleet: fleetInfoSchema.pick({ version: true, mainPrivateIp: true, ports: true, replicas: true, redisUsers: true }),
  replicaCredentials: replicaCredentialsSchema.pick({ redisAdmin: true }),
};

const replicaSchema = {
  replicaName: z.string().min(1),
  slotName: z.string().min(1),
  publicAddress: address,
  privateIp: z.string().min(1),
  postgresMode: z.enum(["replica", "promoted", "rejoin"]),
  hostKey,
  sshUser,
};

function field<T>(stack: string, outputs: Record<string, unknown>, name: string, schema: z.ZodType<T>): T {
  const value = outputs[name];
  if (value === undefined || value === null) {
    throw new StackOutputError(`stack ${stack}: output "${name}" is missing (run \`pulumi up\` on it with this version of the program)`);
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const where = issue.path.length ? `${name}.${issue.path.join(".")}` : name;
    // Never echo the value: it may be secret.
    throw new StackOutputError(`stack ${stack}: output "${where}" is malformed: ${issue.message}`);
  }
  return r.data;
}

function optionalPort(stack: string, outputs: Record<string, unknown>): number {
  return outputs.sshPort === undefined ? 22 : field(stack, outputs, "sshPort", sshPort);
}

/**
 * The stack of one of the main stack's replicas, named as the main stack is:
 * same organisation and project, the replica's name as the stack's
 * (acme/synaxic/main -> acme/synaxic/replica-1).
 */
export function replicaStackName(mainStack: string, replicaName: string): string {
  const parts = mainStack.split("/");
  parts[parts.length - 1] = replicaName;
  return parts.join("/");
}

/** The replicas the main stack's outputs list (fleet.replicas), by name. */
export function listedReplicas(mainStack: string, main: Record<string, unknown>): string[] {
  return field(mainStack, main, "fleet", z.object({ replicas: fleetInfoSchema.shape.replicas })).replicas.map((r) => r.name);
}

/** How to reach the main host, or a replica host from its own stack's outputs. */
export function sshTargetOf(stack: string, outputs: Record<string, unknown>, role: "main" | "replica"): SshTarget {
  return {
    name: role === "main" ? "main" : field(stack, outputs, "replicaName", replicaSchema.replicaName),
    address: field(stack, outputs, "publicAddress", role === "main" ? mainSchema.publicAddress : replicaSchema.publicAddress),
    port: optionalPort(stack, outputs),
    user: field(stack, outputs, "sshUser", mainSchema.sshUser),
    hostKey: field(stack, outputs, "hostKey", mainSchema.hostKey),
  };
}

/** Whether the fleet backs up: the main stack's fleet.backup is set (null or absent: no backups). */
export function fleetHasBackups(main: Record<string, unknown>): boolean {
  const fleet = main.fleet as { backup?: unknown } | undefined;
  return typeof fleet?.backup === "object" && fleet.backup !== null;
}

/** The application's database (fleet.databaseName), when the main stack says. */
export function fleetDatabase(main: Record<string, unknown>): string | undefined {
  const name = (main.fleet as { databaseName?: unknown } | undefined)?.databaseName;
  return typeof name === "string" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : undefined;
}

const stackNameSchema = z.string().regex(/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+){0,2}$/, { message: "expected a stack name" });

/**
 * The control stack the host stacks name (their controlStack output), or
 * undefined for a fleet without one. Stacks that name two different ones, or
 * that were deployed under one (controlGeneration) without naming it, are an
 * error: the command would judge the fleet against the wrong primary.
 */
export function controlStackOf(stacks: readonly { stack: string; outputs: Record<string, unknown> }[]): string | undefined {
  let found: { stack: string; control: string } | undefined;
  for (const { stack, outputs } of stacks) {
    if (outputs.controlStack === undefined) {
      if (outputs.controlGeneration !== undefined) {
        throw new StackOutputError(`stack ${stack} was deployed under a control stack (output controlGeneration) but does not name it: run \`pulumi up\` on it with this version of the program, or give --control <stack>`);
      }
      continue;
    }
    const control = field(stack, outputs, "controlStack", stackNameSchema);
    if (found && found.control !== control) throw new StackOutputError(`stacks ${found.stack} and ${stack} name different control stacks (${found.control}, ${control}): set the same controlStack on every host stack`);
    found ??= { stack, control };
  }
  return found?.control;
}

/** The control stack's decision, from its `control` output (lib/control.ts), checked. */
export function controlExpectation(stack: string, outputs: Record<string, unknown>): ControlExpectation {
  const c = field(stack, outputs, "control", controlInfoSchema);
  return { stack, primary: c.primary, generation: c.generation, previousPrimary: c.previousPrimary, fenced: c.fenced };
}

/** The control generation a host stack was deployed under, when it says. */
function deployedGeneration(stack: string, outputs: Record<string, unknown>): { controlGeneration?: number } {
  return outputs.controlGeneration === undefined ? {} : { controlGeneration: field(stack, outputs, "controlGeneration", z.number().int().nonnegative()) };
}

/** Everything the status command needs, from the stacks. Holds the Redis admin password: keep it out of output. */
export interface StatusPlan {
  expectation: FleetExpectation;
  /** The main host first, then each replica host whose stack was given. */
  targets: SshTarget[];
  ports: { postgres: number; redis: number };
  redisAdmin: { user: string; password: string };
}

export function buildPlan(
  mainStack: string,
  main: Record<string, unknown>,
  replicaStacks: readonly { stack: string; outputs: Record<string, unknown> }[],
  /** The control stack's decision, when the fleet has one (controlStackOf, controlExpectation). */
  control: ControlExpectation | null = null,
): StatusPlan {
  const fleet = field(mainStack, main, "fleet", mainSchema.fleet);
  const credentials = field(mainStack, main, "replicaCredentials", mainSchema.replicaCredentials);
  const mainTarget: SshTarget = {
    name: "main",
    address: field(mainStack, main, "publicAddress", mainSchema.publicAddress),
    port: optionalPort(mainStack, main),
    user: field(mainStack, main, "sshUser", mainSchema.sshUser),
    hostKey: field(mainStack, main, "hostKey", mainSchema.hostKey),
  };

  const replicas: ExpectedReplica[] = fleet.replicas.map((r) => ({ ...r, checked: false, postgresMode: "replica", redisRole: "replica" }));
  const targets: SshTarget[] = [mainTarget];
  const unknownReplicaStacks: FleetExpectation["unknownReplicaStacks"] = [];
  const seen = new Map<string, string>();
  for (const { stack, outputs } of replicaStacks) {
    const name = field(stack, outputs, "replicaName", replicaSchema.replicaName);
    const other = seen.get(name);
    if (other !== undefined) throw new StackOutputError(`stacks ${other} and ${stack} both run replica ${name}: name each replica stack once`);
    seen.set(name, stack);
    const postgresMode: PostgresMode = field(stack, outputs, "postgresMode", replicaSchema.postgresMode);
    const redisRole = outputs.redisRole === "master" ? "master" : "replica";
    const privateIp = field(stack, outputs, "privateIp", replicaSchema.privateIp);
    const slotName = field(stack, outputs, "slotName", replicaSchema.slotName);
    targets.push({
      name,
      address: field(stack, outputs, "publicAddress", replicaSchema.publicAddress),
      port: optionalPort(stack, outputs),
      user: field(stack, outputs, "sshUser", replicaSchema.sshUser),
      hostKey: field(stack, outputs, "hostKey", replicaSchema.hostKey),
    });
    const expected = replicas.find((r) => r.name === name);
    if (!expected) {
      unknownReplicaStacks.push({ stack, replicaName: name });
      continue;
    }
    if (expected.privateIp !== privateIp) {
      throw new StackOutputError(`stack ${stack}: replica ${name} is at ${privateIp}, but the main stack ${mainStack} lists it at ${expected.privateIp}: run \`pulumi up\` on both`);
    }
    if (expected.slotName !== slotName) {
      throw new StackOutputError(`stack ${stack}: replica ${name} uses slot ${slotName}, but the main stack ${mainStack} keeps ${expected.slotName} for it: run \`pulumi up\` on both`);
    }
    Object.assign(expected, { checked: true, postgresMode, redisRole, ...deployedGeneration(stack, outputs) });
  }

  return {
    expectation: {
      main: { name: "main", privateIp: fleet.mainPrivateIp, ...deployedGeneration(mainStack, main) },
      control,
      redisPort: fleet.ports.redis,
      replicas,
      unknownReplicaStacks,
      backups: fleetHasBackups(main),
    },
    targets,
    ports: { postgres: fleet.ports.postgres, redis: fleet.ports.redis },
    redisAdmin: { user: fleet.redisUsers.admin, password: credentials.redisAdmin },
  };
}
