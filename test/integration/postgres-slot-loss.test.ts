/**
 * A replica that stays away longer than max_slot_wal_keep_size allows: its
 * slot is invalidated (wal_status lost), the exporter reports it, the replica
 * cannot stream from its old data any more, and re-initialising it (empty
 * data directory, entrypoint again) restores it. The primary runs with 1 MB
 * WAL segments and a 2 MB slot limit so that this takes seconds.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestNet, waitFor } from "../rig/net";
import { makeCa } from "../rig/pki";
import { PgCluster, PgExporter, PgNode, ledgerTableSql, startPrimaryWithRoles } from "../rig/postgres";

let net: TestNet;
let cluster: PgCluster;
let main: PgNode;
let replica1: PgNode;
let exporter: PgExporter;

beforeAll(async () => {
  net = await TestNet.create(["main", "replica1", "app", "monitor"]);
  cluster = new PgCluster({
    net,
    ca: makeCa("pg-test-ca", net.mkdir("ca")),
    dbHosts: [net.host("main"), net.host("replica1")],
    appHosts: [net.host("app")],
    exporterHosts: [net.host("monitor")],
    initdbArgs: ["--wal-segsize=1"],
    maxSlotWalKeepSizeMB: 2,
    walKeepSizeMB: 0,
  });
  main = cluster.node(net.host("main"));
  replica1 = cluster.node(net.host("replica1"));
  await startPrimaryWithRoles(main);
  await main.psql(ledgerTableSql("ledger", cluster.roles.app.name), { db: cluster.roles.appDatabase });
  await main.psql("INSERT INTO ledger (id, payload) SELECT g, 'before' FROM generate_series(1, 1000) g", { db: cluster.roles.appDatabase });
  await replica1.startReplica("replica", main);
  await main.waitStreaming(replica1);
  exporter = await PgExporter.start(cluster, net.host("monitor"), main, 9187);
});

afterAll(async () => {
  await net?.destroy();
});

async function slotMetric(name: string): Promise<number | undefined> {
  return (await exporter.samples(name)).find((s) => s.labels.slot_name === replica1.slotName)?.value;
}

describe("PostgreSQL replica past max_slot_wal_keep_size", () => {
  it("is detected as lost (pg_replication_slots and the exporter) and re-initialisation restores it", async () => {
    const db = cluster.roles.appDatabase;
    expect(await main.value("SHOW wal_segment_size")).toBe("1MB");
    expect(await main.value("SHOW max_slot_wal_keep_size")).toBe("2MB");
    expect(await slotMetric("synaxic_slot_active")).toBe(1);
    expect(await slotMetric("synaxic_slot_lost")).toBe(0);

    // The replica goes away; the primary writes far more WAL than the slot may hold.
    await replica1.stop("fast");
    await main.psql("CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 4) AS v FROM generate_series(1, 40000) g", { db });
    await waitFor(
      "the slot to be invalidated",
      async () => {
        await main.psql("SELECT pg_switch_wal(); SELECT txid_current(); CHECKPOINT;");
        return (await main.value(`SELECT wal_status FROM pg_replication_slots WHERE slot_name = '${replica1.slotName}'`)) === "lost";
      },
      30_000,
      200,
    );
    expect(await main.query(`SELECT active, restart_lsn IS NULL FROM pg_replication_slots WHERE slot_name = '${replica1.slotName}'`)).toEqual([["f", "t"]]);
    expect(await slotMetric("synaxic_slot_lost")).toBe(1);
    expect(await slotMetric("synaxic_slot_active")).toBe(0);

    // Its old data can no longer follow: the WAL it needs is gone.
    let logAt = replica1.logLength();
    await replica1.startReplica("replica", main);
    await waitFor(
      "the replica to be refused the WAL it needs",
      async () => /has already been removed|can no longer get changes from replication slot/.test(replica1.log(logAt)),
      30_000,
    );
    expect(await main.value(`SELECT count(*) FROM pg_stat_replication WHERE application_name = '${replica1.name}' AND state = 'streaming'`)).toBe("0");
    expect(await replica1.isInRecovery()).toBe(true);

    // Re-initialise: empty the data directory and run the entrypoint again.
    await replica1.stop("fast");
    replica1.wipe();
    logAt = replica1.logLength();
    await replica1.startReplica("replica", main);
    expect(replica1.log(logAt)).toContain(`dropped stale replication slot ${replica1.slotName}`);
    expect(replica1.log(logAt)).toContain("clone complete");
    await main.waitStreaming(replica1);
    expect(await main.value(`SELECT wal_status FROM pg_replication_slots WHERE slot_name = '${replica1.slotName}'`)).toMatch(/^(reserved|extended)$/);
    await waitFor("the exporter to see the new slot", async () => (await slotMetric("synaxic_slot_active")) === 1 && (await slotMetric("synaxic_slot_lost")) === 0, 15_000);

    await main.psql("INSERT INTO ledger (id, payload) SELECT g, 'after' FROM generate_series(1001, 2000) g", { db });
    await replica1.waitReplayed(await main.lsn());
    for (const table of ["ledger", "bulk"]) expect(await replica1.tableChecksum(table)).toEqual(await main.tableChecksum(table));
    expect((await replica1.tableChecksum("ledger")).rows).toBe(2000);
  });
});
