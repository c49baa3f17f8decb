/**
 * A fleet on the engine-tier hosts: stack configurations for a main host and
 * its replicas, as an operator writes them for existing servers, and the
 * checks that the deployed fleet works.
 */
import { execFileSync } from "node:child_process";
import http from "node:http";
import { join } from "node:path";
import type { Checkout } from "./engine";
import type { EngineHost, EngineRig } from "./hosts";
import { REPO, runProcess, type RunResult } from "./engine";

/** The organisation of a self-managed (file) backend. */
export const ORG = "organization";

/** The control stack every host stack of the fleet takes its role from. */
export const CONTROL_STACK = `${ORG}/synaxic/control`;

/** The control stack's configuration: the host stacks a fence reaches, and what it says now. */
export function controlConfig(hosts: string[], state: Record<string, unknown> = {}): Record<string, unknown> {
  return { role: "control", hostStacks: Object.fromEntries(hosts.map((h) => [h, `${ORG}/synaxic/${h}`])), ...state };
}

export function hostConfig(host: EngineHost): Record<string, unknown> {
  return {
    hostName: host.name,
    hostProvider: "existing",
    sshHost: host.ip,
    sshHostKey: host.hostKeyPublic,
    cpus: 2,
    memoryMiB: 4096,
    privateIp: host.ip,
  };
}

/**
 * The pgbackrest package the rig's stand-in PostgreSQL image carries
 * (Debian trixie's, which is also the default; images/build.sh prints it as PGBACKREST and the README
 * there says why): pinned so that the image build finds it installed and
 * needs no network.
 */
export const RIG_PGBACKREST_VERSION = "2.55.1-1";

/**
 * The curl, openssl and ca-certificates versions in the rig's stand-in Redis
 * image (images/build.sh installs bookworm's, whichever they are when the
 * archive is built): the engine tier pins redisBackupPackages to them, so
 * that the program's Redis snapshot image, built FROM it, needs no network.
 */
export async function rigRedisBackupPackages(host: EngineHost, redisImage = "redis:8.10.2-trixie"): Promise<Record<string, string>> {
  const out = (await host.docker(["run", "--rm", "--network", "none", "--entrypoint", "dpkg-query", redisImage, "-W", "-f=${Package}=${Version}\n", "curl", "openssl", "ca-certificates"])).stdout;
  const v = Object.fromEntries(out.trim().split("\n").map((l) => l.split("=") as [string, string]));
  if (!v.curl || !v.openssl || !v["ca-certificates"]) throw new Error(`the rig's ${redisImage} lacks curl, openssl or ca-certificates: ${out}`);
  return { curl: v.curl, openssl: v.openssl, caCertificates: v["ca-certificates"] };
}

export function mainConfig(rig: EngineRig, replicas: string[]): Record<string, unknown> {
  const main = rig.host("main");
  return {
    role: "main",
    ...hostConfig(main),
    pgbackrestVersion: RIG_PGBACKREST_VERSION,
    ...(rig.backup ? { backupRepository: rig.backup.repository } : {}),
    ...(rig.backup?.redisBackupPackages ? { redisBackupPackages: rig.backup.redisBackupPackages } : {}),
    privateNetworkCidr: rig.cidr,
    replicas: replicas.map((r) => `${r}=${rig.host(r).ip}`),
    controlStack: CONTROL_STACK,
    googleClientId: "engine-tier.apps.googleusercontent.com",
  };
}

export function replicaConfig(rig: EngineRig, name: string, mainStack = "main"): Record<string, unknown> {
  return {
    role: "replica",
    ...hostConfig(rig.host(name)),
    privateNetworkCidr: rig.cidr,
    mainStack: `${ORG}/synaxic/${mainStack}`,
    controlStack: CONTROL_STACK,
    googleClientId: "engine-tier.apps.googleusercontent.com",
  };
}

/** A stack's secrets; the object storage's key is the main stack's only (replica stacks refuse it). */
export function secrets(rig: EngineRig, role: unknown = "main"): Record<string, string> {
  return {
    "synaxic:sshPrivateKey": rig.operator.privateKey,
    "synaxic:googleClientSecret": "engine-tier-google-secret",
    ...(rig.backup && role === "main" ? { "synaxic:backupAccessKeyId": rig.backup.accessKeyId, "synaxic:backupSecretAccessKey": rig.backup.secretAccessKey } : {}),
  };
}

/** Creates the control stack; its one secret is the operator's key (a stop fence reaches the old primary over SSH). */
export async function initControlStack(co: Checkout, rig: EngineRig, config: Record<string, unknown>): Promise<void> {
  await co.initStack("control", config, { "synaxic:sshPrivateKey": rig.operator.privateKey });
}

/** Creates a stack with its config and secrets. */
export async function initStack(co: Checkout, rig: EngineRig, stack: string, config: Record<string, unknown>): Promise<void> {
  await co.initStack(stack, config, secrets(rig, config.role));
}

/** psql as postgres inside a host's PostgreSQL container; returns unaligned rows. */
export async function psql(host: EngineHost, sql: string, database = "postgres"): Promise<string> {
  const r = await host.docker(["exec", "-i", "-u", "postgres", `synaxic-${host.name}-postgres`, "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", database], { input: sql });
  return r.stdout.trim();
}

/** The status command, as an operator runs it, against the stacks of a checkout. */
export function statusCommand(co: Checkout, rig: EngineRig, mainStack: string, replicaStacks: string[]): { code: number; report: unknown; text: string } {
  const argv = [
    join(REPO, "node_modules", ".bin", "ts-node"),
    "--transpile-only",
    join(REPO, "scripts", "status.ts"),
    "--main",
    `${ORG}/synaxic/${mainStack}`,
    ...replicaStacks.flatMap((s) => ["--replica", `${ORG}/synaxic/${s}`]),
    "--identity",
    rig.operator.privateKeyFile,
    "--json",
  ];
  try {
    const out = execFileSync(argv[0]!, argv.slice(1), { cwd: co.dir, env: { ...process.env, ...co.engine.env }, stdio: ["ignore", "pipe", "pipe"], timeout: 180_000 }).toString();
    return { code: 0, report: JSON.parse(out), text: out };
  } catch (e) {
    const err = e as { status?: number; stdout?: Buffer; stderr?: Buffer };
    const out = err.stdout?.toString() ?? "";
    let report: unknown = undefined;
    try {
      report = JSON.parse(out);
    } catch {
      /* not JSON */
    }
    return { code: err.status ?? 1, report, text: `${out}\n${err.stderr?.toString() ?? ""}` };
  }
}

/** `npm run fleet -- up|preview` as an operator runs it: the Automation API on the checkout's stacks, main's replicas found from main. */
export function fleetDeploy(co: Checkout, kind: "up" | "preview"): Promise<RunResult> {
  return runProcess([process.execPath, join(REPO, "scripts", "fleet.cjs"), kind, "--main", `${ORG}/synaxic/main`, "--quiet", "--cwd", co.dir], {
    cwd: co.dir,
    env: co.engine.env,
    timeoutMs: 1_500_000,
  });
}

/**
 * The documented recovery from an interrupted `up` (docs/operations.md), step by step: `pulumi
 * cancel` releases the lock the killed run left, the containers whose create
 * was interrupted are removed from their host (their data is in volumes),
 * then `pulumi refresh --clear-pending-creates` drops the interrupted
 * operations from the state.
 */
export async function recoverInterrupted(co: Checkout, rig: EngineRig, stack: string): Promise<string[]> {
  await co.pulumi(["cancel", "--yes", "--stack", stack]);
  const exported = JSON.parse((await co.pulumi(["stack", "export", "--stack", stack])).stdout) as {
    deployment: { pending_operations?: { type: string; resource: { type: string; inputs?: { name?: string } } }[] };
  };
  const hostName = String((await co.pulumi(["config", "get", "hostName", "--stack", stack])).stdout).trim();
  const removed: string[] = [];
  for (const op of exported.deployment.pending_operations ?? []) {
    if (op.type !== "creating" || op.resource.type !== "docker:index/container:Container" || !op.resource.inputs?.name) continue;
    await rig.host(hostName).docker(["rm", "-f", op.resource.inputs.name], { allowFail: true });
    removed.push(op.resource.inputs.name);
  }
  await co.pulumi(["refresh", "--yes", "--skip-preview", "--non-interactive", "--clear-pending-creates", "--stack", stack]);
  return removed;
}

/**
 * Reads and writes through the balancer at `host`:80 on `path` until stopped:
 * three GET and three POST clients, a new connection per request, each about
 * 6 requests a second (together under the balancer's per-address rate limit).
 * Every answer of 400 or more, and every connection error, is a failure.
 */
export function balancerLoad(host: EngineHost, path: string): { tally: { ok: number; failed: string[] }; stop: () => Promise<void> } {
  const tally = { ok: 0, failed: [] as string[] };
  let loading = true;
  const one = (method: "GET" | "POST") =>
    new Promise<void>((resolve) => {
      const req = http.request({ host: host.ip, port: 80, path, method, agent: false, timeout: 15_000, headers: { "content-length": method === "POST" ? "2" : "0" } }, (res) => {
        res.resume();
        res.on("end", () => {
          if (res.statusCode! < 400) tally.ok++;
          else tally.failed.push(`${method} ${res.statusCode}`);
          resolve();
        });
      });
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", (e) => {
        tally.failed.push(`${method} ${e.message}`);
        resolve();
      });
      req.end(method === "POST" ? "{}" : undefined);
    });
  const loops = (["GET", "GET", "GET", "POST", "POST", "POST"] as const).map(async (m) => {
    while (loading) {
      const t0 = Date.now();
      await one(m);
      await new Promise((r) => setTimeout(r, Math.max(0, 160 - (Date.now() - t0))));
    }
  });
  return {
    tally,
    stop: async () => {
      loading = false;
      await Promise.all(loops);
    },
  };
}
