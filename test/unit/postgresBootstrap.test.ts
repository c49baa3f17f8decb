/**
 * The primary's bootstrap permit under Pulumi's mocks: the step that writes
 * it exists on the main (and local) stack, runs before the primary's
 * container, is re-created only by a new bootstrapGeneration (its only
 * trigger), writes nothing on update, and holds nothing secret. Its
 * commands are also run here for real, through a shell, as the command
 * provider runs them. And the PostgreSQL containers' provider timeouts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findLeaks, runMocked, type Recorded, type RunResult } from "./harness";
import { runLocal, runMain, runReplica } from "./fixtures";
import { PostgresMaster, type PostgresMasterArgs } from "../../components/PostgresMaster";
import { renderBootstrapPermit } from "../../templates/postgres-entrypoint";

const CONTAINER = "docker:index/container:Container";
const REMOTE = "command:remote:Command";
const LOCAL = "command:local:Command";
const STEP = "postgres-bootstrap-permit";

// The harness records the options tests have needed so far; customTimeouts
// are recorded here the same way, on the way into the SDK.
type Timeouts = { create?: string; update?: string; delete?: string };
const runtimeResource = createRequire(__filename)("@pulumi/pulumi/runtime/resource") as {
  registerResource: (...a: unknown[]) => unknown;
  __synaxicTimeouts?: Map<string, Timeouts | undefined>;
};
if (!runtimeResource.__synaxicTimeouts) {
  const seen = new Map<string, Timeouts | undefined>();
  const next = runtimeResource.registerResource;
  runtimeResource.registerResource = (...a: unknown[]) => {
    const [, , t, name, , , , , opts] = a as [unknown, unknown, string, string, unknown, unknown, unknown, unknown, pulumi.CustomResourceOptions | undefined];
    seen.set(`${t}::${name}`, opts?.customTimeouts as Timeouts | undefined);
    return next(...a);
  };
  runtimeResource.__synaxicTimeouts = seen;
}
const timeoutsOf = (r: Recorded) => runtimeResource.__synaxicTimeouts!.get(`${r.type}::${r.name}`);
const seconds = (d: string | undefined) => {
  const m = /^(\d+)s$/.exec(d ?? "");
  if (!m) throw new Error(`not a duration in seconds: ${d}`);
  return Number(m[1]);
};

/** The text after `readonly NAME=` in a rendered script, unquoted. */
function scriptValue(script: string, name: string): string {
  const line = script.split("\n").find((l) => l.startsWith(`readonly ${name}=`));
  if (!line) throw new Error(`no ${name} in the script`);
  const v = line.slice(`readonly ${name}=`.length);
  return v.startsWith("'") ? v.slice(1, -1).replace(/'\\''/g, "'") : v;
}

function entrypointOf(container: Recorded): string {
  const uploads = container.inputs.uploads as { file: string; content: string }[];
  return uploads.find((u) => u.file === "/usr/local/bin/synaxic-entrypoint")!.content;
}

const root = mkdtempSync(join(tmpdir(), "synaxic-bootstrap-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let main: RunResult<Record<string, unknown>>;
beforeAll(async () => {
  main = await runMain(1);
}, 120_000);

describe("the bootstrap permit step on the main stack", () => {
  it("exists, belongs to the primary, and the primary's container is created after it", () => {
    const step = main.one(REMOTE, STEP);
    expect(step.opts.parent).toBe("postgres");
    expect(main.one(CONTAINER, "postgres-container").opts.dependsOn).toContain(STEP);
    // Nothing about the host's PostgreSQL waits on it besides the container.
    expect(main.resources.filter((r) => r.opts.dependsOn.includes(STEP)).map((r) => r.name)).toEqual(["postgres-container"]);
  });

  it("is re-created only by a new bootstrap generation: its triggers are exactly [bootstrapGeneration]", () => {
    expect(main.one(REMOTE, STEP).inputs.triggers).toEqual([0]);
  });

  it("writes the permit the primary's entrypoint accepts, into the directory its container mounts read-write", () => {
    const step = main.one(REMOTE, STEP).inputs;
    const container = main.one(CONTAINER, "postgres-container");
    const entrypoint = entrypointOf(container);
    expect(step.stdin).toBe(`${scriptValue(entrypoint, "PERMIT")}\n`);
    expect(step.stdin).toBe(renderBootstrapPermit({ cluster: "main", generation: 0, dataDir: "/var/lib/postgresql/data" }));
    expect(scriptValue(entrypoint, "PERMIT_FILE")).toBe("/etc/synaxic/bootstrap/permit");
    const mounts = container.inputs.mounts as { type: string; source: string; target: string; readOnly: boolean }[];
    expect(mounts.filter((m) => m.target === "/etc/synaxic/bootstrap")).toEqual([{ type: "bind", source: "/etc/synaxic/main/postgres-bootstrap", target: "/etc/synaxic/bootstrap", readOnly: false }]);
    expect(step.create).toMatch(/^timeout --kill-after=10 \d+ sh -c .* sh \/etc\/synaxic\/main\/postgres-bootstrap \/etc\/synaxic\/main\/postgres-bootstrap\/permit$/);
  });

  it("its update (a new connection: a re-created server) writes no permit; only its create does", () => {
    const step = main.one(REMOTE, STEP).inputs;
    expect(step.update).toBeDefined();
    expect(step.update).not.toBe(step.create);
    expect(step.create).toContain("cat >");
    expect(step.update).not.toMatch(/cat >|mv |permit(?!\s+written)/);
    expect(step.update).toMatch(/^timeout --kill-after=10 \d+ sh -c '.*no bootstrap permit written.*' sh \/etc\/synaxic\/main\/postgres-bootstrap$/);
    expect(step.addPreviousOutputInEnv).toBe(false);
  });

  it("holds nothing secret: not on its command lines, not in its input", () => {
    const step = main.one(REMOTE, STEP);
    expect(main.secretValues.length).toBeGreaterThan(10);
    for (const k of ["create", "update", "delete", "stdin"]) expect(findLeaks(step.raw[k], main.secretValues), k).toEqual([]);
    expect(findLeaks(step.raw.triggers, main.secretValues)).toEqual([]);
  });

  it("replicas have no permit and mount no bootstrap directory", async () => {
    const { replica } = await runReplica("replica-1", "10.10.0.3");
    expect(replica.of(REMOTE).filter((c) => c.name.includes("bootstrap"))).toEqual([]);
    const mounts = replica.one(CONTAINER, "postgres-container").inputs.mounts as { target: string }[];
    expect(mounts.map((m) => m.target)).not.toContain("/etc/synaxic/bootstrap");
    expect(scriptValue(entrypointOf(replica.one(CONTAINER, "postgres-container")), "MODE")).toBe("replica");
  });

  it("the local stack builds the same step with the default generation, as a local command", async () => {
    const local = await runLocal(1);
    const step = local.one(LOCAL, STEP);
    expect(step.inputs.triggers).toEqual([0]);
    expect(local.one(CONTAINER, "postgres-container").opts.dependsOn).toContain(STEP);
    expect(step.inputs.update).not.toContain("cat >");
  });
});

/** Arguments of a primary, as the main stack gives them, on a host reached with local commands. */
function masterArgs(filesRoot: string, extra: Partial<PostgresMasterArgs> = {}): PostgresMasterArgs {
  return {
    hostName: "main",
    shell: { kind: "local", filesRoot },
    image: "postgres:15.14",
    pgbackrestVersion: "2.59.1-1.pgdg12+1",
    networkMode: "host",
    privateIp: "10.10.0.2",
    port: 5432,
    databaseName: "synaxic",
    sizing: { memoryMiB: 2048, cpus: 2, maxConnections: 100 },
    memoryLimitMiB: 2048,
    maxWalSenders: 10,
    maxReplicationSlots: 10,
    maxSlotWalKeepSizeMB: 1024,
    walKeepSizeMB: 64,
    tls: { certPem: "cert", keyPem: pulumi.secret("key"), caPem: "ca" },
    timeoutSeconds: 300,
    replicas: [],
    passwords: { app: pulumi.secret("app-pw-0123"), replication: pulumi.secret("repl-pw-0123"), rewind: pulumi.secret("rewind-pw-0123"), exporter: pulumi.secret("exp-pw-0123") },
    volumeName: "synaxic-main-pgdata",
    ...extra,
  };
}

async function master(filesRoot: string, extra: Partial<PostgresMasterArgs> = {}) {
  return runMocked({ config: {} }, () => {
    new PostgresMaster("postgres", masterArgs(filesRoot, extra));
    return {};
  });
}

function sh(cmd: string, stdin = "") {
  const r = spawnSync("sh", ["-c", cmd], { input: stdin, encoding: "utf8", timeout: 20_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

describe("the bootstrap permit step, run for real", () => {
  it("create writes the permit (0600, in a 0700 directory), update writes none, delete removes only its own", async () => {
    const filesRoot = mkdtempSync(join(root, "files-"));
    const run = await master(filesRoot, { bootstrapGeneration: 3 });
    const step = run.one(LOCAL, STEP).inputs as { create: string; update: string; delete: string; stdin: string; triggers: unknown[] };
    expect(step.triggers).toEqual([3]);
    const dir = join(filesRoot, "main/postgres-bootstrap");
    const permit = join(dir, "permit");

    // Update (only the connection changed): the directory the container mounts exists, no permit.
    let r = sh(step.update, step.stdin);
    expect(r.code, r.out).toBe(0);
    expect(existsSync(dir)).toBe(true);
    expect(existsSync(permit)).toBe(false);
    expect(r.out).toContain("no bootstrap permit written");

    // Create: the permit, exactly the text the entrypoint accepts.
    r = sh(step.create, step.stdin);
    expect(r.code, r.out).toBe(0);
    expect(readFileSync(permit, "utf8")).toBe(renderBootstrapPermit({ cluster: "main", generation: 3, dataDir: "/var/lib/postgresql/data" }));
    expect(`${scriptValue(entrypointOf(run.one(CONTAINER, "postgres-container")), "PERMIT")}\n`).toBe(readFileSync(permit, "utf8"));
    expect((statSync(permit).mode & 0o777).toString(8)).toBe("600");
    expect((statSync(dir).mode & 0o777).toString(8)).toBe("700");

    // An update never brings a consumed permit back.
    rmSync(permit);
    expect(sh(step.update, step.stdin).code).toBe(0);
    expect(existsSync(permit)).toBe(false);

    // Delete after a replacement (the next generation's permit is already there): kept.
    const next = renderBootstrapPermit({ cluster: "main", generation: 4, dataDir: "/var/lib/postgresql/data" });
    writeFileSync(permit, next);
    expect(sh(step.delete).code).toBe(0);
    expect(readFileSync(permit, "utf8")).toBe(next);
    // Its own permit, not used yet: removed. Nothing there: nothing to do.
    expect(sh(step.create, step.stdin).code).toBe(0);
    expect(sh(step.delete).code).toBe(0);
    expect(existsSync(permit)).toBe(false);
    expect(sh(step.delete).code).toBe(0);
  });

  it("a new generation is a new trigger and a new entrypoint (the container is re-created, the new cluster's roles with it)", async () => {
    const filesRoot = mkdtempSync(join(root, "files-"));
    const g0 = await master(filesRoot);
    const g1 = await master(filesRoot, { bootstrapGeneration: 1 });
    expect(g0.one(LOCAL, STEP).inputs.triggers).toEqual([0]);
    expect(g1.one(LOCAL, STEP).inputs.triggers).toEqual([1]);
    const e0 = entrypointOf(g0.one(CONTAINER, "postgres-container"));
    const e1 = entrypointOf(g1.one(CONTAINER, "postgres-container"));
    expect(e0).not.toBe(e1);
    expect(scriptValue(e1, "PERMIT")).toContain("generation=1");
    expect(e1).toContain("pulumi config set bootstrapGeneration 2");
    // The roles step follows the container.
    expect(g1.one(LOCAL, "postgres-roles").inputs.triggers).toEqual(["postgres-container-id"]);
    // Only the generation differs between the two steps' commands.
    expect(g1.one(LOCAL, STEP).inputs.create).toBe(g0.one(LOCAL, STEP).inputs.create);
    expect(g1.one(LOCAL, STEP).inputs.update).toBe(g0.one(LOCAL, STEP).inputs.update);
  });

  it("refuses a generation that is not a non-negative integer", async () => {
    const filesRoot = mkdtempSync(join(root, "files-"));
    await expect(master(filesRoot, { bootstrapGeneration: -1 })).rejects.toThrow(/bootstrapGeneration must be a non-negative integer/);
    await expect(master(filesRoot, { bootstrapGeneration: 1.5 })).rejects.toThrow(/bootstrapGeneration must be a non-negative integer/);
  });
});

describe("PostgreSQL containers: provider timeouts follow their start", () => {
  it("primary and replica containers set create, update and delete timeouts beyond their start budget (the provider's default is 20 minutes)", async () => {
    const primary = main.one(CONTAINER, "postgres-container");
    const t = timeoutsOf(primary);
    expect(t).toBeDefined();
    const gate = main.one(REMOTE, "postgres-ready");
    const gateSeconds = Number(/^timeout --kill-after=10 (\d+) /.exec(String(gate.inputs.create))![1]);
    expect(seconds(t!.create)).toBeGreaterThan(gateSeconds);
    expect(seconds(t!.update)).toBe(seconds(t!.create));
    expect(seconds(t!.delete)).toBeGreaterThan(Number(primary.inputs.destroyGraceSeconds));

    // A replica's first start is a clone of up to 30 minutes: its container may take longer than the provider's default 20.
    const { replica } = await runReplica("replica-1", "10.10.0.3");
    const c = replica.one(CONTAINER, "postgres-container");
    const rt = timeoutsOf(c)!;
    const rgate = Number(/^timeout --kill-after=10 (\d+) /.exec(String(replica.one(REMOTE, "postgres-ready").inputs.create))![1]);
    expect(rgate).toBeGreaterThanOrEqual(1800);
    expect(seconds(rt.create)).toBeGreaterThan(rgate);
    expect(seconds(rt.create)).toBeGreaterThan(20 * 60);
    expect(seconds(rt.update)).toBe(seconds(rt.create));
    expect(seconds(rt.delete)).toBeGreaterThan(Number(c.inputs.destroyGraceSeconds));
  });
});
