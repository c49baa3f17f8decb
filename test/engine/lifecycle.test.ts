/**
 * The real-engine tier: the program run by the Pulumi CLI with the real
 * docker, command, tls and random providers, against hosts that are network
 * namespaces with their own sshd and dockerd, as `hostProvider: existing`.
 * Each step is what an operator does, in order, on one fleet.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, REPO, locateEngine, type Checkout } from "./engine";
import { EngineRig } from "./hosts";
import { ORG, initStack, mainConfig, psql, recoverInterrupted, replicaConfig, statusCommand } from "./fleet";
import { waitFor } from "../rig/net";

const { paths, missing } = locateEngine();
if (missing.length > 0) throw new Error(`the engine tier needs ${missing.join(", ")} (see test/engine/README.md)`);

let rig: EngineRig;
let engine: Engine;
let work: string;
let co: Checkout;

function buildImages(): string {
  const out = execFileSync("bash", [join(REPO, "test", "engine", "images", "build.sh")], { stdio: ["ignore", "pipe", "inherit"], timeout: 3_000_000 }).toString().trim().split("\n");
  return out[out.length - 1]!;
}

beforeAll(async () => {
  const images = buildImages();
  work = mkdtempSync(join(tmpdir(), "synaxic-engine-"));
  rig = await EngineRig.create(["main", "replica-1", "replica-2", "replica-3"], images);
  engine = new Engine(paths, join(work, "backend"));
  await engine.installPlugins();
  co = engine.checkout(join(work, "checkout-a"));
}, 3_600_000);

afterAll(async () => {
  await rig?.destroy();
  if (work && !process.env.SYNAXIC_KEEP_RIG) rmSync(work, { recursive: true, force: true });
});

describe("a fleet of main and two replicas on the real engine", () => {
  it("previews the main stack before anything exists", async () => {
    await initStack(co, rig, "main", mainConfig(rig, ["replica-1", "replica-2"]));
    const steps = await co.previewChanges("main");
    expect(steps.every((s) => s.op === "create")).toBe(true);
    expect(steps.filter((s) => s.type === "docker:index/container:Container").length).toBeGreaterThanOrEqual(8);
  });

  it("brings up main, then each replica", async () => {
    await co.up("main");
    for (const r of ["replica-1", "replica-2"]) {
      await initStack(co, rig, r, replicaConfig(rig, r));
      await co.up(r);
    }
  });

  it("works: the app answers through the balancer, a write on the primary is read on both replicas", async () => {
    const main = rig.host("main");
    const body = execFileSync("curl", ["-fsS", "--max-time", "10", `http://${main.ip}/actuator/health`]).toString();
    expect(body).toContain("UP");
    await psql(main, "CREATE TABLE IF NOT EXISTS engine_probe (id int primary key, note text); INSERT INTO engine_probe VALUES (1, 'written on main') ON CONFLICT DO NOTHING;", "synaxic");
    for (const r of ["replica-1", "replica-2"]) {
      await waitFor(`${r} replays the write`, async () => (await psql(rig.host(r), "SELECT note FROM engine_probe WHERE id = 1", "synaxic").catch(() => "")) === "written on main", 30_000, 500);
    }
  });

  it("the status command says the fleet is healthy", async () => {
    const s = statusCommand(co, rig, "main", ["replica-1", "replica-2"]);
    expect(s.code, s.text).toBe(0);
  });

  it("a second preview of every stack shows no changes", async () => {
    for (const stack of ["main", "replica-1", "replica-2"]) {
      const steps = await co.previewChanges(stack);
      expect(steps.map((s) => `${s.op} ${s.urn} ${JSON.stringify(s.detailedDiff ?? s.diffs ?? {})}`), stack).toEqual([]);
    }
  });

  it("refresh finds no drift: after it, a preview still shows no changes", async () => {
    for (const stack of ["main", "replica-1", "replica-2"]) {
      await co.pulumi(["refresh", "--yes", "--skip-preview", "--non-interactive", "--stack", stack]);
      const steps = await co.previewChanges(stack);
      expect(steps.map((s) => `${s.op} ${s.urn}`), stack).toEqual([]);
    }
  });

  it("pulumi stack export holds no generated secret in plain text", async () => {
    for (const stack of ["main", "replica-1"]) {
      const exported = (await co.pulumi(["stack", "export", "--stack", stack])).stdout;
      const plain = JSON.stringify(await co.outputs("main", true));
      const secretsFound = secretStrings(JSON.parse(plain));
      expect(secretsFound.length, "the main stack's secret outputs").toBeGreaterThan(5);
      for (const v of [...secretsFound, rig.operator.privateKey.split("\n")[1]!]) expect(exported.includes(v), `${stack} export holds a secret`).toBe(false);
      expect(exported).toContain("ciphertext");
    }
  });

  it("adding replica-3 by config: main's diff touches no service container, then its own stack brings it in", async () => {
    co.writeConfig("main", { replicas: ["replica-1", "replica-2", "replica-3"].map((r) => `${r}=${rig.host(r).ip}`) });
    const steps = await co.previewChanges("main");
    const containers = steps.filter((s) => s.type === "docker:index/container:Container");
    expect(containers.map((s) => `${s.op} ${s.urn}`), "no service container is replaced or updated").toEqual([]);
    expect(steps.filter((s) => s.op === "replace" || s.op === "delete" || s.op === "create-replacement").map((s) => s.urn)).toEqual([]);
    // The new slot exists on the primary before the replica's own stack runs.
    expect(steps.some((s) => s.op === "create" && /slot-replica-3/.test(s.urn))).toBe(true);
    await co.up("main");
    expect(await psql(rig.host("main"), "SELECT slot_name FROM pg_replication_slots ORDER BY 1")).toContain("replica_3");
    await initStack(co, rig, "replica-3", replicaConfig(rig, "replica-3"));
  });

  it("an `up` killed during a container create, then run again, converges after the documented recovery", async () => {
    // Killed like a crash of the machine running Pulumi, while Docker creates PostgreSQL's container.
    const killed = await co.pulumi(["up", "--yes", "--skip-preview", "--non-interactive", "--stack", "replica-3"], {
      interruptOn: /replica-3-postgres-container\s+creating|docker:index\/container:Container\s+replica-3-postgres/,
      allowFail: true,
    });
    expect(killed.code).not.toBe(0);
    const again = await co.up("replica-3", { allowFail: true });
    if (again.code !== 0) {
      // The engine names the interrupted operations; the README's recovery clears them.
      expect(again.stdout + again.stderr).toMatch(/pending operations|already in use/);
      await recoverInterrupted(co, rig, "replica-3");
      await co.up("replica-3");
    }
    await waitFor("replica-3 replays", async () => (await psql(rig.host("replica-3"), "SELECT note FROM engine_probe WHERE id = 1", "synaxic").catch(() => "")) === "written on main", 60_000, 500);
    expect(await co.previewChanges("replica-3")).toEqual([]);
  });

  it("removing replica-3: its stack is destroyed, then main drops its slot", async () => {
    await co.pulumi(["destroy", "--yes", "--skip-preview", "--non-interactive", "--stack", "replica-3"]);
    co.writeConfig("main", { replicas: ["replica-1", "replica-2"].map((r) => `${r}=${rig.host(r).ip}`) });
    await co.up("main");
    expect(await psql(rig.host("main"), "SELECT slot_name FROM pg_replication_slots ORDER BY 1")).not.toContain("replica_3");
  });

  it("destroy from a fresh clone in another directory, with the original checkout gone, keeps the data; up again finds it", async () => {
    const fresh = engine.checkout(join(work, "checkout-b"));
    for (const f of co.stackFiles()) cpSync(join(co.dir, f), join(fresh.dir, f));
    co.remove();
    co = fresh;
    // replica-2 as from a machine that never ran it: no identity file there, so the program runs first and writes it.
    rmSync(join(engine.env.SYNAXIC_SSH_DIR!, "organization-synaxic-replica-2-replica-2"));
    await co.pulumi(["destroy", "--yes", "--skip-preview", "--non-interactive", "--run-program", "--stack", "replica-2"]);
    for (const stack of ["replica-1", "main"]) await co.pulumi(["destroy", "--yes", "--skip-preview", "--non-interactive", "--stack", stack]);
    for (const name of ["main", "replica-1", "replica-2"]) {
      const h = rig.host(name);
      const running = (await h.docker(["ps", "-q"])).stdout.trim();
      expect(running, `${name} runs no container after destroy`).toBe("");
      const volumes = (await h.docker(["volume", "ls", "-q"])).stdout;
      expect(volumes, `${name} keeps its PostgreSQL data`).toMatch(/pgdata/);
    }
    await co.up("main");
    for (const r of ["replica-1", "replica-2"]) await co.up(r);
    expect(await psql(rig.host("main"), "SELECT note FROM engine_probe WHERE id = 1", "synaxic")).toBe("written on main");
    expect(await psql(rig.host("replica-2"), "SELECT note FROM engine_probe WHERE id = 1", "synaxic")).toBe("written on main");
  });

  it("power loss of each host: everything comes back by itself, no committed write is lost, replication resumes", async () => {
    for (const name of ["main", "replica-1", "replica-2"]) {
      const h = rig.host(name);
      const row = `power loss of ${name}`;
      await psql(rig.host("main"), `INSERT INTO engine_probe VALUES ((SELECT coalesce(max(id), 0) + 1 FROM engine_probe), '${row}')`, "synaxic");
      const before = (await h.docker(["ps", "--format", "{{.Names}}"])).stdout.split("\n").filter(Boolean).sort();
      await h.powerOff();
      await h.boot();
      await waitFor(`${name}: every container running again`, async () => {
        const now = (await h.docker(["ps", "--format", "{{.Names}}"])).stdout.split("\n").filter(Boolean).sort();
        return JSON.stringify(now) === JSON.stringify(before);
      }, 120_000, 1000);
      await waitFor(`${name}: the row is there after the power loss`, async () => (await psql(h, `SELECT count(*) FROM engine_probe WHERE note = '${row}'`, "synaxic").catch(() => "")) === "1", 120_000, 1000);
    }
    await waitFor("both replicas stream again", async () => (await psql(rig.host("main"), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")) === "2", 120_000, 1000);
    const prom = (await rig.host("main").docker(["inspect", "-f", "{{.State.Status}}", "synaxic-main-prometheus"])).stdout.trim();
    expect(prom).toBe("running");
    const s = statusCommand(co, rig, "main", ["replica-1", "replica-2"]);
    expect(s.code, s.text).toBe(0);
  });
});

/** The passwords and private keys under the secret outputs, line by line (lines of 12 characters or more). */
function secretStrings(outputs: Record<string, unknown>): string[] {
  const found: string[] = [];
  const walk = (v: unknown, key: string) => {
    if (typeof v === "string") {
      if (/password|keyPem|privateKey|^[a-z]+$/i.test(key) && !/certPem|caPem/i.test(key)) {
        for (const line of v.split("\n")) if (line.length >= 12 && !/^-----/.test(line)) found.push(line);
      }
    } else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(outputs.replicaCredentials, "replicaCredentials");
  walk(outputs.replicaTls, "replicaTls");
  return found;
}

export { ORG };
