/**
 * The README's first command on the real engine: `npm run up:local` brings
 * the whole fleet up on one Docker engine, the balancer answers, and
 * `npm run down:local` takes it all away again.
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
  tier = await startTier("local", ["docker-host"], ["scripts", "Pulumi.local.yaml"]);
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

  it("down:local removes every container and network it made", async () => {
    const r = await runProcess(["npm", "run", "down:local"], { cwd: tier.co.dir, env: env(), allowFail: true, timeoutMs: 900_000 });
    expect(r.code, `${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`).toBe(0);
    const host = tier.rig.host("docker-host");
    expect((await host.docker(["ps", "-aq"])).stdout.trim()).toBe("");
    expect((await host.docker(["network", "ls", "--filter", "label=app=synaxic", "-q"])).stdout.trim()).toBe("");
  });
});
