/**
 * The real-engine tier: the program run by the Pulumi CLI with the real
 * docker, command, tls and random providers, against hosts that are network
 * namespaces with their own sshd and dockerd, as `hostProvider: existing`.
 * Each step is what an operator does, in order, on one fleet.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, REPO, locateEngine, type Checkout } from "./engine";
import { EngineRig } from "./hosts";
import { ORG, initStack, mainConfig, psql, replicaConfig, statusCommand } from "./fleet";
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
});

export { ORG };
