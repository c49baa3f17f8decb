/**
 * The README's first command on the real engine: `npm run up:local` brings
 * the whole fleet up on one Docker engine with the stand-in app it builds
 * from standin-app/ (Pulumi.local.yaml names no appImage), a visit posted
 * through the balancer lands in PostgreSQL and Redis and is read back by the
 * replica's app, and `npm run down:local` takes it all away again.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { runProcess } from "./engine";
import { startTier, stopTier, type Tier } from "./tier";
import { waitFor } from "../rig/net";
import { RIG_PGBACKREST_VERSION } from "./fleet";

let tier: Tier;

beforeAll(async () => {
  tier = await startTier("local", ["docker-host"], ["scripts", "Pulumi.local.yaml", "standin-app"]);
}, 3_600_000);

afterAll(() => stopTier(tier));

describe("the local fleet on one Docker engine (npm run up:local / down:local)", () => {
  const env = () => {
    // What a user's shell has: the Pulumi CLI on PATH and a Docker engine; the scripts choose the backend and passphrase.
    const rest = Object.fromEntries(Object.entries(tier.engine.env).filter(([k]) => k !== "PULUMI_BACKEND_URL" && k !== "PULUMI_CONFIG_PASSPHRASE"));
    return { ...rest, DOCKER_HOST: `unix://${tier.rig.host("docker-host").dockerSocket}` };
  };

  it("down:local before any up:local says there is nothing to tear down, and succeeds", async () => {
    const r = await runProcess(["npm", "run", "down:local"], { cwd: tier.co.dir, env: env(), allowFail: true, timeoutMs: 120_000 });
    expect(r.code, `${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`).toBe(0);
    expect(r.stdout).toContain("there is no local stack in .state/backend, so nothing to tear down");
  });

  it("up:local brings main and replica-1 up, and the balancer answers", async () => {
    // The rig has no network: the PostgreSQL image build must find the pinned pgBackRest in the stand-in base image.
    appendFileSync(join(tier.co.dir, "Pulumi.local.yaml"), `  synaxic:pgbackrestVersion: "${RIG_PGBACKREST_VERSION}"\n`);
    const r = await runProcess(["npm", "run", "up:local"], { cwd: tier.co.dir, env: env(), allowFail: true, timeoutMs: 1_200_000 });
    const diagnostics = r.stdout.includes("Diagnostics:") ? r.stdout.slice(r.stdout.indexOf("Diagnostics:"), r.stdout.indexOf("Diagnostics:") + 6000) : r.stdout.slice(-4000);
    expect(r.code, `${diagnostics}\n${r.stderr.slice(-4000)}`).toBe(0);
    expect(r.stdout).toContain("balancer: http://127.0.0.1:8080");
    const host = tier.rig.host("docker-host");
    await waitFor("the balancer answers", async () => (await host.exec(["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:8080/actuator/health"], { allowFail: true })).stdout.includes("UP"), 60_000, 1000);
    const names = (await host.docker(["ps", "--format", "{{.Names}}"])).stdout;
    for (const c of ["synaxic-main-postgres", "synaxic-replica-1-postgres", "synaxic-main-redis", "synaxic-replica-1-redis", "synaxic-main-nginx"]) expect(names).toContain(c);
  });

  /** The host's app container: synaxic-<host>-app-a or -b, whichever deploy slot runs (templates/app.ts). */
  const appContainer = async (h: string): Promise<string> => {
    const names = (await tier.rig.host("docker-host").docker(["ps", "--filter", `name=^synaxic-${h}-app-[ab]$`, "--format", "{{.Names}}"])).stdout.trim().split("\n").filter(Boolean);
    expect(names, `${h}'s app container`).toHaveLength(1);
    return names[0]!;
  };

  it("the apps are the stand-in built on this engine from standin-app/; a visit through the balancer is written to PostgreSQL and Redis, and the replica's app reads it", async () => {
    const host = tier.rig.host("docker-host");
    // Built here, tagged with the digest of its sources, and what both app containers run.
    const built = (await host.docker(["image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "synaxic-standin-app"])).stdout.trim().split("\n");
    expect(built).toHaveLength(1);
    const builtId = (await host.docker(["image", "inspect", "--format", "{{.Id}}", built[0]!.split(" ")[0]!])).stdout.trim();
    for (const h of ["main", "replica-1"]) {
      const app = await appContainer(h);
      expect((await host.docker(["inspect", "--format", "{{.Image}}", app])).stdout.trim(), app).toBe(builtId);
    }
    const curl = async (args: string[]) => (await host.exec(["curl", "-sS", "--max-time", "10", ...args], { allowFail: true })).stdout;
    const health = JSON.parse(await curl(["http://127.0.0.1:8080/actuator/health"])) as { status: string; components: Record<string, { status: string }> };
    expect(health.status).toBe("UP");
    expect(health.components.db!.status).toBe("UP");
    expect(health.components.redis!.status).toBe("UP");

    // POST is a write: the balancer sends it to the main host's app, in write mode.
    const first = JSON.parse(await curl(["-X", "POST", "http://127.0.0.1:8080/v1/visits"])) as { mode: string; visits: number; redisVisits: number };
    const second = JSON.parse(await curl(["-X", "POST", "http://127.0.0.1:8080/v1/visits"])) as { mode: string; visits: number; redisVisits: number };
    expect(first.mode).toBe("write");
    expect(second.visits).toBe(first.visits + 1);
    expect(second.redisVisits).toBe(first.redisVisits + 1);
    const pg = async (container: string, sql: string) =>
      (await host.docker(["exec", "-i", "-u", "postgres", container, "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", "synaxic"], { input: sql })).stdout.trim();
    expect(await pg("synaxic-main-postgres", "SELECT count FROM synaxic_standin_visits WHERE id = 1")).toBe(String(second.visits));
    // The table is the app role's, created by the app itself (as the real app's Flyway does).
    expect(await pg("synaxic-main-postgres", "SELECT tableowner FROM pg_tables WHERE tablename = 'synaxic_standin_visits'")).toBe("synaxic");
    await waitFor("replica-1 replays the visit", async () => (await pg("synaxic-replica-1-postgres", "SELECT count FROM synaxic_standin_visits WHERE id = 1").catch(() => "")) === String(second.visits), 30_000, 500);

    // GETs spread over both apps: the replica's answers in read mode, from its standby, with the master's Redis count.
    const seen = new Set<string>();
    await waitFor("a GET answered by the read-mode app", async () => {
      const r = JSON.parse(await curl(["http://127.0.0.1:8080/v1/visits"])) as { mode: string; visits: number; redisVisits: number };
      if (r.visits === second.visits && r.redisVisits === second.redisVisits) seen.add(r.mode);
      return seen.has("read");
    }, 30_000, 200);
    // And the read-mode app refuses a write as the real app does on a standby (SQLSTATE 25006): asked directly on its
    // host's private address, from inside its container (the image has node, not curl).
    const post = 'fetch("http://10.10.0.3:8080/v1/visits", { method: "POST" }).then((r) => r.text()).then((t) => process.stdout.write(t))';
    const direct = JSON.parse((await host.docker(["exec", await appContainer("replica-1"), "node", "-e", post], { allowFail: true })).stdout || "{}") as { mode?: string; sqlState?: string };
    expect(direct).toMatchObject({ mode: "read", sqlState: "25006" });
  });

  it("up:local again: nothing is rebuilt while standin-app/ is unchanged; a changed source builds a new image that both apps then run, the data kept", async () => {
    const host = tier.rig.host("docker-host");
    const state = async () => {
      const tags = (await host.docker(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "synaxic-standin-app"])).stdout.trim().split("\n").filter(Boolean);
      const apps = await Promise.all(["main", "replica-1"].map(async (h) => (await host.docker(["inspect", "--format", "{{.Id}} {{.Image}}", await appContainer(h)])).stdout.trim()));
      return { tags, apps };
    };
    const up = async (...extra: string[]) => {
      const r = await runProcess(["npm", "run", "up:local", ...(extra.length ? ["--", ...extra] : [])], { cwd: tier.co.dir, env: env(), allowFail: true, timeoutMs: 900_000 });
      expect(r.code, `${r.stdout.slice(-4000)}\n${r.stderr.slice(-2000)}`).toBe(0);
      return r.stdout;
    };
    const before = await state();
    const again = await up("--diff");
    const changed = again.split("\n").filter((l) => /^\s*[-+~]{1,2}\+?-?\s|replace|update/.test(l)).slice(0, 80).join("\n");
    expect(await state(), changed).toEqual(before);

    appendFileSync(join(tier.co.dir, "standin-app", "server.mjs"), "// a change to the stand-in's source\n");
    const t0 = Date.now();
    await up();
    const seconds = Math.round((Date.now() - t0) / 1000);
    const after = await state();
    expect(after.tags).toHaveLength(1);
    expect(after.tags[0]).not.toBe(before.tags[0]);
    const newId = (await host.docker(["image", "inspect", "--format", "{{.Id}}", after.tags[0]!])).stdout.trim();
    for (const app of after.apps) expect(app.split(" ")[1]).toBe(newId);
    // The containers were replaced (new container IDs) and answer again; the visits written before are still there.
    expect(after.apps.map((a) => a.split(" ")[0])).not.toEqual(before.apps.map((a) => a.split(" ")[0]));
    const visits = JSON.parse((await host.exec(["curl", "-sS", "--max-time", "10", "-X", "POST", "http://127.0.0.1:8080/v1/visits"])).stdout) as { visits: number };
    expect(visits.visits).toBeGreaterThanOrEqual(3);
    expect(seconds, "the rebuild and the apps' replacement").toBeLessThan(600);
  });

  it("down:local removes every container and network it made", async () => {
    const r = await runProcess(["npm", "run", "down:local"], { cwd: tier.co.dir, env: env(), allowFail: true, timeoutMs: 900_000 });
    expect(r.code, `${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`).toBe(0);
    const host = tier.rig.host("docker-host");
    expect((await host.docker(["ps", "-aq"])).stdout.trim()).toBe("");
    expect((await host.docker(["network", "ls", "--filter", "label=app=synaxic", "-q"])).stdout.trim()).toBe("");
  });
});
