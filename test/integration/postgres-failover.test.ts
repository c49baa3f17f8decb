/**
 * Failover between two servers under write load, with a client that follows
 * whichever server is writable (multi-host conninfo, target_session_attrs):
 * a planned promotion (clean stop, promote, old primary rejoins through
 * pg_rewind) must lose no acknowledged write; an unplanned one (primary
 * SIGKILLed, asynchronous replication) may lose at most what the replica had
 * not received, which is measured against the lag sampled just before the
 * crash. The crashed primary then rejoins through pg_rewind, which discards
 * its unreplicated writes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { TestNet, type Host } from "../rig/net";
import { makeCa } from "../rig/pki";
import { LedgerWriter, PgCluster, PgNode, ledgerTableSql, lsnDiff, missingAcks, startPrimaryWithRoles } from "../rig/postgres";
import { renderPromoteSql } from "../../templates/postgres";

let net: TestNet;
let cluster: PgCluster;
let main: PgNode;
let replica1: PgNode;
let app: Host;

beforeAll(async () => {
  net = await TestNet.create(["main", "replica1", "app"]);
  app = net.host("app");
  cluster = new PgCluster({
    net,
    ca: makeCa("pg-test-ca", net.mkdir("ca")),
    dbHosts: [net.host("main"), net.host("replica1")],
    appHosts: [app],
    exporterHosts: [],
  });
  main = cluster.node(net.host("main"));
  replica1 = cluster.node(net.host("replica1"));
  await startPrimaryWithRoles(main);
  await main.psql(ledgerTableSql("ledger", cluster.roles.app.name), { db: cluster.roles.appDatabase });
  await replica1.startReplica("replica", main);
  await main.waitStreaming(replica1);
});

afterAll(async () => {
  await net?.destroy();
});

/** A client that writes to whichever of the two servers is the primary. */
function failoverWriter(): LedgerWriter {
  return new LedgerWriter({ cluster, from: app, conninfo: cluster.conninfo([main, replica1], { targetSessionAttrs: "read-write", connectTimeout: 2 }) });
}

function controlData(node: PgNode, field: string): string {
  const out = execFileSync(join(cluster.bin, "pg_controldata"), [node.dataDir], { encoding: "utf8" });
  const m = new RegExp(`^${field}:\\s*(.*)$`, "m").exec(out);
  if (!m) throw new Error(`pg_controldata: no ${field}`);
  return m[1]!.trim();
}

describe("PostgreSQL failover", () => {
  it("planned promotion loses no acknowledged write, and the old primary rejoins as a replica through pg_rewind", async () => {
    const writer = failoverWriter().start();
    await writer.waitForAcks(200);

    // Clean stop: the walsender hands the replica everything up to the shutdown checkpoint.
    await main.stop("fast");
    expect(controlData(main, "Database cluster state")).toBe("shut down");
    await replica1.waitReplayed(controlData(main, "Latest checkpoint location"));

    // The stopped primary's data cannot start as a replica without a rewind.
    const refused = await main.runEntrypoint(main.replicaEntrypoint("replica", replica1));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("FATAL: ");
    expect(refused.stderr).toContain("holds a cluster without standby.signal");

    const promote = await replica1.psql(renderPromoteSql());
    expect(promote.stdout.trim()).toBe("primary");
    expect(await replica1.isInRecovery()).toBe(false);
    expect(await replica1.timeline()).toBe(2);
    await writer.waitForAcks(200);
    const lastOld = writer.acksFrom(main.host.ip).at(-1)!;
    const firstNew = writer.acksFrom(replica1.host.ip)[0]!;
    const gapMs = firstNew.at - lastOld.at;
    expect(await missingAcks(replica1, writer.acks)).toEqual([]);

    // The old primary comes back as a replica of the new one.
    const logAt = main.logLength();
    await main.startReplica("rejoin", replica1);
    expect(main.log(logAt)).toContain("rewind complete");
    await replica1.waitStreaming(main);
    expect(await main.isInRecovery()).toBe(true);
    expect(await main.timeline()).toBe(2);

    await writer.stop();
    expect(await missingAcks(replica1, writer.acks)).toEqual([]);
    await main.waitReplayed(await replica1.lsn());
    expect(await main.tableChecksum("ledger")).toEqual(await replica1.tableChecksum("ledger"));
    console.log(
      `[planned promotion] ${writer.ackCount} acknowledged writes (${writer.acksFrom(main.host.ip).length} on main, ` +
        `${writer.acksFrom(replica1.host.ip).length} on replica1), none lost; write gap ${gapMs} ms`,
    );

    // Restarting the promoted server in mode "promoted" keeps it the primary.
    await replica1.stop("fast");
    await replica1.startReplica("promoted", main);
    expect(await replica1.isInRecovery()).toBe(false);
    expect(await replica1.timeline()).toBe(2);
    await replica1.waitStreaming(main);
    // Mode "promoted" never creates an empty primary.
    const empty = await replica1.runEntrypoint(replica1.replicaEntrypoint("promoted", main, { dataDir: net.mkdir("empty-data") }));
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain("FATAL: mode promoted but");
    expect(empty.stderr).toContain("refusing to create a new, empty primary");
  });

  it("unplanned promotion under asynchronous replication loses at most what the lag before the crash allows, and pg_rewind discards it on the old primary", async () => {
    // replica1 is now the primary and main its replica: crash replica1 as it is.
    const natural = await unplannedFailover(replica1, main, 0);
    expect(natural.timeline).toBe(3);
    // Again the other way round, this time with the replica cut off for a
    // second before the crash, so that acknowledged writes are really lost
    // and the old primary's rewind has to discard them.
    const partitioned = await unplannedFailover(main, replica1, 1000);
    expect(partitioned.timeline).toBe(4);
    expect(partitioned.lagBytes).toBeGreaterThan(0);
    expect(partitioned.missing).toBeGreaterThan(0);
    expect(partitioned.rewindLog).toMatch(/servers diverged at WAL location/);
    expect(partitioned.rewindLog).toMatch(/rewinding from last common checkpoint/);
  });
});

/**
 * Kills `primary` under write load (after cutting `standby` off for
 * partitionMs, if given), promotes `standby`, checks and reports the
 * acknowledged writes lost against the lag sampled just before the crash,
 * then brings `primary` back as a replica through pg_rewind.
 */
async function unplannedFailover(primary: PgNode, standby: PgNode, partitionMs: number) {
  const writer = failoverWriter().start();
  await writer.waitForAcks(300);
  await primary.waitStreaming(standby);
  if (partitionMs > 0) {
    await standby.host.cut();
    await new Promise((r) => setTimeout(r, partitionMs));
  }

  // Lag just before the crash: replica position first, then the primary's,
  // so that the difference can only overstate it.
  const acksBeforeSample = writer.ackCount;
  const standbyLsn = await standby.replayLsn();
  const primaryLsn = await primary.lsn();
  await primary.kill();
  const lagBytes = lsnDiff(primaryLsn, standbyLsn);
  if (partitionMs > 0) await standby.host.restore();
  const oldPrimaryAcks = writer.acksFrom(primary.host.ip);
  const sampled = new Set(writer.acks.slice(0, acksBeforeSample).map((a) => a.id));
  const lastOld = oldPrimaryAcks.at(-1)!;

  expect((await standby.psql(renderPromoteSql())).stdout.trim()).toBe("primary");
  const timeline = await standby.timeline();
  await writer.waitForAcks(200);
  await writer.stop();
  const firstNew = writer.acksFrom(standby.host.ip).find((a) => a.at >= lastOld.at)!;

  const missing = await missingAcks(standby, oldPrimaryAcks);
  const missingIds = new Set(missing.map((a) => a.id));
  const missingSampled = missing.filter((a) => sampled.has(a.id));
  // Writes acknowledged before the sample lie within the measured lag: none
  // may be missing when the lag was 0; otherwise each missing one's WAL (at
  // least payloadBytes, one after the other) had to fit in the lag.
  if (lagBytes <= 0) expect(missingSampled).toEqual([]);
  else expect(missingSampled.length).toBeLessThanOrEqual(1 + Math.floor(lagBytes / writer.payloadBytes));
  // The new primary has a prefix of the old primary's history: no holes.
  const firstMissing = oldPrimaryAcks.findIndex((a) => missingIds.has(a.id));
  if (firstMissing >= 0) expect(oldPrimaryAcks.slice(firstMissing).every((a) => missingIds.has(a.id))).toBe(true);
  // Everything the new primary acknowledged is there.
  expect(await missingAcks(standby, writer.acksFrom(standby.host.ip))).toEqual([]);
  console.log(
    `[unplanned promotion${partitionMs ? `, replica cut off ${partitionMs} ms before` : ""}] lag before the crash ${lagBytes} bytes; ` +
      `${oldPrimaryAcks.length} writes acknowledged by the old primary, ${oldPrimaryAcks.filter((a) => !sampled.has(a.id)).length} after the lag sample; ` +
      `${missing.length} acknowledged writes missing after promotion (${missingSampled.length} from before the sample, ` +
      `bound ${lagBytes <= 0 ? 0 : 1 + Math.floor(lagBytes / writer.payloadBytes)}); write gap ${firstNew.at - lastOld.at} ms`,
  );

  // The crashed primary rejoins: pg_rewind winds back what the new primary never got.
  const logAt = primary.logLength();
  await primary.startReplica("rejoin", standby);
  const rewindLog = primary.log(logAt);
  expect(rewindLog).toContain("rewind complete");
  await standby.waitStreaming(primary);
  expect(await primary.isInRecovery()).toBe(true);
  await primary.waitReplayed(await standby.lsn());
  expect(await primary.tableChecksum("ledger")).toEqual(await standby.tableChecksum("ledger"));
  expect(await missingAcks(primary, missing)).toEqual(missing);
  return { timeline, lagBytes, missing: missing.length, rewindLog };
}
