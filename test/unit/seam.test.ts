/**
 * `pulumi up` loads index.ts through ts-node, as CommonJS with the tsconfig
 * Pulumi.yaml names applied: vitest's loader would hide errors that path hits.
 * These tests load the program exactly that way in a separate node process.
 */
import { afterAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { legacyPrevious, mainConfig, replicaConfig, runMain, SECRET_KEYS } from "./fixtures";
import { makeCa } from "../rig/pki";

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "synaxic-seam-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function load(stack: string, config: Record<string, string>, refs: Record<string, unknown> = {}, env: Record<string, string> = {}) {
  const cfgFile = join(dir, `${stack}-config.json`);
  const refsFile = join(dir, `${stack}-refs.json`);
  writeFileSync(cfgFile, JSON.stringify({ stack, config, secretKeys: SECRET_KEYS }));
  writeFileSync(refsFile, JSON.stringify({ __caPem: makeCa("seam-ca", dir).certPem, ...refs }));
  const r = await run(process.execPath, ["test/seam/load-program.cjs", cfgFile, refsFile], { env: { ...process.env, ...env }, timeout: 120_000 }).catch(
    (e: { stdout: string; stderr: string }) => e,
  );
  const line = r.stdout.trim().split("\n").pop() ?? "";
  return { ...(JSON.parse(line || "{}") as { ok: boolean; outputs?: string[]; types?: string[]; error?: string }), stderr: r.stderr };
}

describe("the program as the Pulumi runtime loads it", () => {
  it("main stack: loads as CommonJS, registers its components and exports its outputs", async () => {
    const r = await load("main", mainConfig(2));
    expect(r.error).toBeUndefined();
    expect(r.ok).toBe(true);
    expect(r.types).toEqual(expect.arrayContaining(["synaxic:components:PostgresMaster", "synaxic:components:NginxBalancer", "docker:index/container:Container"]));
    expect(r.outputs).toEqual(expect.arrayContaining(["fleet", "replicaCredentials", "replicaTls", "balancerUrl"]));
  });

  it("replica stack: reads the main stack through a StackReference", async () => {
    // A fleet where main made every replica's key (the legacy flow): the replica declares its services at once.
    const main = await runMain(2, {}, { previous: legacyPrevious(2) });
    const refs = { "acme/synaxic/main": { outputs: main.values, secretOutputNames: [...main.secretOutputs] } };
    const r = await load("replica-1", replicaConfig("replica-1", "10.10.0.3"), refs);
    expect(r.error).toBeUndefined();
    expect(r.types).toEqual(expect.arrayContaining(["pulumi:pulumi:StackReference", "synaxic:components:PostgresReplica"]));
    expect(r.outputs).toEqual(expect.arrayContaining(["slotName", "postgresMode"]));
  });

  it("local stack: the whole fleet on one Docker engine, no SSH key needed", async () => {
    const config = mainConfig(1, { "synaxic:hostProvider": "local" });
    delete config["synaxic:sshPrivateKey"];
    const r = await load("local", config);
    expect(r.error).toBeUndefined();
    expect(r.types).toEqual(expect.arrayContaining(["synaxic:components:LocalHost", "synaxic:components:PostgresReplica", "synaxic:components:PostgresMaster"]));
    expect(r.types).not.toContain("hcloud:index/server:Server");
  });

  it("a bad configuration stops the program with the config error", async () => {
    const r = await load("main", mainConfig(["replica-1=10.10.0.3", "replica-2=10.10.0.3"]));
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/synaxic:replicas\[1\]: duplicate address "10\.10\.0\.3"/);
  });

  it("the loader does not type-check (Pulumi.yaml's tsconfig sets noCheck): a type error loads, and only `npm run typecheck` (tsc with the project's options) reports it", async () => {
    const r = await load("main", mainConfig(0), {}, { SEAM_ENTRY: "test/seam/fixtures/type-error.ts" });
    expect(r.error).toBeUndefined();
    expect(r.ok).toBe(true);
    const tsc = await run(process.execPath, [require.resolve("typescript/bin/tsc"), "--noEmit", "--strict", "--skipLibCheck", "test/seam/fixtures/type-error.ts"]).catch((e: { stdout: string }) => e);
    expect(tsc.stdout).toMatch(/TS2322/);
  });
}, 180_000);
