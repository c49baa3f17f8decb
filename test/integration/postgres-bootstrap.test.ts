/**
 * The primary's bootstrap permit on a real PostgreSQL 15 server, run by the
 * rendered primary entrypoint: the stack's first deployment (permit present,
 * empty data directory) initialises a cluster and uses up its permit; a lost
 * disk (empty data directory, no permit) is refused with the reason and the
 * way out, and nothing is created; restored data starts as it was, and a
 * permit left next to it is removed; a new bootstrap generation is the one
 * way to a new, empty cluster, and an old generation's permit does not open it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { TestNet } from "../rig/net";
import { makeCa } from "../rig/pki";
import { PgCluster, PgNode } from "../rig/postgres";

let net: TestNet;
let main: PgNode;
const t0 = Date.now();

function elapsed(): string {
  return `${((Date.now() - t0) / 1000).toFixed(1)} s`;
}

/** The data directory's entries (it is created by the rig, or by the entrypoint). */
function dataEntries(node: PgNode): string[] {
  return existsSync(node.dataDir) ? readdirSync(node.dataDir) : [];
}

beforeAll(async () => {
  net = await TestNet.create(["main", "app"]);
  const cluster = new PgCluster({
    net,
    ca: makeCa("pg-test-ca", net.mkdir("ca")),
    dbHosts: [net.host("main")],
    appHosts: [net.host("app")],
    exporterHosts: [],
  });
  main = cluster.node(net.host("main"));
});

afterAll(async () => {
  await net?.destroy();
});

describe("PostgreSQL primary bootstrap", () => {
  let sysid: string;
  let backup: string;

  it("first deployment: the permit initialises the empty data directory once, the server answers, and the permit is gone", async () => {
    expect(dataEntries(main)).toEqual([]);
    const logAt = main.logLength();
    const started = Date.now();
    // The stack's first deployment: the permit step writes the permit, then the entrypoint runs.
    await main.startPrimary();
    console.log(`[bootstrap] initdb and first start took ${Date.now() - started} ms; ${elapsed()}`);
    expect(existsSync(main.permitFile)).toBe(false);
    expect(main.log(logAt)).toContain("initialising a new cluster");
    expect(main.log(logAt)).toContain("bootstrap permit for generation 0");
    expect(main.log(logAt)).toContain("used and removed");
    expect(await main.value("SELECT 40 + 2")).toBe("42");
    expect(await main.isInRecovery()).toBe(false);
    sysid = await main.systemIdentifier();
    await main.psql("CREATE TABLE precious (id int PRIMARY KEY, v text NOT NULL); INSERT INTO precious VALUES (1, 'written before the disk was lost');");
    await main.stop("fast");
    // The cluster's files, kept aside as a backup would be.
    backup = join(net.mkdir("backup"), "data");
    execFileSync("cp", ["-a", main.dataDir, backup]);
  });

  it("lost disk: an empty data directory without a permit is refused, says why and how to proceed, and no cluster is created", async () => {
    main.wipe();
    // Run in the foreground, as the container's first start would.
    const refused = await main.runEntrypoint(main.primaryEntrypoint());
    expect(refused.code).not.toBe(0);
    const msg = refused.stderr;
    expect(msg).toContain(`FATAL: ${main.dataDir} is empty, but this stack has already initialised its cluster`);
    expect(msg).toContain("Refusing to start an empty, writable primary: replicas re-initialised from it would clone nothing");
    expect(msg).toContain("Restore the data");
    expect(msg).toContain("pulumi config set bootstrapGeneration 1, then pulumi up");
    expect(dataEntries(main)).toEqual([]);
    // The normal start path (the container restarted by Docker) refuses the same way, and still creates nothing.
    const logAt = main.logLength();
    await expect(main.startPrimary()).rejects.toThrow(/entrypoint exited \(1\)[\s\S]*is empty, but this stack has already initialised its cluster/);
    expect(dataEntries(main)).toEqual([]);
    expect(main.running()).toBe(false);
    expect(main.log(logAt)).not.toContain("initialising a new cluster");
  });

  it("restored data with a stale permit next to it: starts with its own data, and the permit is removed", async () => {
    execFileSync("cp", ["-a", `${backup}/.`, main.dataDir]);
    // A permit left over (e.g. a permit step re-created while the data was intact).
    main.writeBootstrapPermit();
    expect(existsSync(main.permitFile)).toBe(true);
    const logAt = main.logLength();
    await main.startPrimary();
    expect(existsSync(main.permitFile)).toBe(false);
    expect(main.log(logAt)).toContain("removed the bootstrap permit");
    expect(main.log(logAt)).not.toContain("initialising a new cluster");
    expect(await main.systemIdentifier()).toBe(sysid);
    expect(await main.query("SELECT id, v FROM precious")).toEqual([["1", "written before the disk was lost"]]);
    await main.stop("fast");
  });

  it("a new bootstrap generation is the one way to a new, empty cluster; the old generation's permit does not open it", async () => {
    main.wipe();
    main.bootstrapGeneration = 1;
    // The previous generation's permit (restored from somewhere, say) lets nothing happen.
    main.writeBootstrapPermit(0);
    const stale = await main.runEntrypoint(main.primaryEntrypoint());
    expect(stale.code).not.toBe(0);
    expect(stale.stderr).toContain("is not for this cluster");
    expect(stale.stderr).toContain("generation=0");
    expect(dataEntries(main)).toEqual([]);
    // `pulumi config set bootstrapGeneration 1` and `pulumi up`: the step is re-created and writes the new permit.
    main.writeBootstrapPermit(1);
    const logAt = main.logLength();
    await main.startPrimary();
    expect(main.log(logAt)).toContain("bootstrap permit for generation 1");
    expect(existsSync(main.permitFile)).toBe(false);
    expect(await main.systemIdentifier()).not.toBe(sysid);
    expect(await main.value("SELECT count(*) FROM pg_class WHERE relname = 'precious'")).toBe("0");
    console.log(`[bootstrap] generations checked; ${elapsed()}`);
  });
});
