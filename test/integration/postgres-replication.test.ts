/**
 * One primary and two streaming replicas, all TLS-verified against the test
 * CA, reused across scenarios that keep the cluster healthy: bootstrap over
 * SSL with per-replica slots, pg_hba refusals, replicas killed and cut off
 * under write load, the primary killed and restarted without failover, the
 * exporter's replication metrics, and removing a replica (its slot dropped).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { parsePostgresqlConf, restartSettingNames } from "../../templates/postgres-conf";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa } from "../rig/pki";
import {
  LedgerWriter,
  PgCluster,
  PgExporter,
  PgNode,
  ledgerTableSql,
  lsnDiff,
  missingAcks,
  startPrimaryWithRoles,
} from "../rig/postgres";
import { renderPgpass, renderSlotCreateSql, renderSlotDropSql } from "../../templates/postgres";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let net: TestNet;
let cluster: PgCluster;
let main: PgNode;
let replica1: PgNode;
let replica2: PgNode;
let app: Host;
let monitor: Host;
let outsider: Host;
let primaryExporter: PgExporter | undefined;
let replicaExporter: PgExporter | undefined;
const t0 = Date.now();

function elapsed(): string {
  return `${((Date.now() - t0) / 1000).toFixed(1)} s`;
}

/** Stops the writer, then checks the ledger against the primary and every replica. */
async function assertNothingLost(writer: LedgerWriter, replicas: PgNode[]): Promise<void> {
  await writer.stop();
  expect(writer.ackCount).toBeGreaterThan(0);
  expect(await missingAcks(main, writer.acks)).toEqual([]);
  const target = await main.lsn();
  const primarySum = await main.tableChecksum("ledger");
  expect(primarySum.rows).toBeGreaterThanOrEqual(writer.ackCount);
  for (const r of replicas) {
    await r.waitReplayed(target);
    expect(lsnDiff(await r.replayLsn(), target)).toBeGreaterThanOrEqual(0);
    expect(await r.tableChecksum("ledger")).toEqual(primarySum);
  }
}

const BASE_BACKUP = "received replication command: BASE_BACKUP";

/** The exporter's samples of a metric, checking and then dropping the label it adds itself (server). */
async function samples(e: PgExporter, target: PgNode, name: string): Promise<{ labels: Record<string, string>; value: number }[]> {
  return (await e.samples(name)).map((s) => {
    const { server, ...labels } = s.labels;
    expect(server).toBe(`${target.host.ip}:${target.port}`);
    return { labels, value: s.value };
  });
}

function countOf(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

beforeAll(async () => {
  net = await TestNet.create(["main", "replica1", "replica2", "app", "monitor", "outsider"]);
  app = net.host("app");
  monitor = net.host("monitor");
  outsider = net.host("outsider");
  const ca = makeCa("pg-test-ca", net.mkdir("ca"));
  cluster = new PgCluster({
    net,
    ca,
    dbHosts: [net.host("main"), net.host("replica1"), net.host("replica2")],
    appHosts: [app],
    exporterHosts: [monitor],
    // No WAL kept beyond what slots ask for, so that a dropped slot visibly stops holding WAL.
    walKeepSizeMB: 0,
  });
  main = cluster.node(net.host("main"));
  replica1 = cluster.node(net.host("replica1"));
  replica2 = cluster.node(net.host("replica2"));
  await startPrimaryWithRoles(main);
  await main.psql(ledgerTableSql("ledger", cluster.roles.app.name), { db: cluster.roles.appDatabase });
  // Some data, so that the base backups take long enough for writes to land during them.
  await main.psql("CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 150000) g;", { db: cluster.roles.appDatabase });
});

afterAll(async () => {
  await net?.destroy();
});

describe("PostgreSQL streaming replication over TLS", () => {
  it("bootstraps replicas over SSL through their own slots; they are read-only, get rows written during the base backup, and a restart does not re-clone", async () => {
    const writer = new LedgerWriter({ cluster, from: app, conninfo: cluster.conninfo(main) }).start();
    await writer.waitForAcks(20);
    const cloneStart = Date.now();
    await Promise.all([replica1.startReplica("replica", main), replica2.startReplica("replica", main)]);
    const cloneEnd = Date.now();
    await writer.waitForAcks(20);
    await main.waitStreaming(replica1);
    await main.waitStreaming(replica2);

    // Streaming, over SSL, each through its own slot.
    const rows = await main.query(
      "SELECT r.application_name, r.state, s.ssl, host(r.client_addr) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) ORDER BY 1",
    );
    expect(rows).toEqual([
      ["replica1", "streaming", "t", replica1.host.ip],
      ["replica2", "streaming", "t", replica2.host.ip],
    ]);
    const slots = await main.query("SELECT slot_name, active, active_pid IS NOT NULL FROM pg_replication_slots ORDER BY 1");
    expect(slots).toEqual([
      ["synaxic_replica1", "t", "t"],
      ["synaxic_replica2", "t", "t"],
    ]);

    // Read-only.
    const insert = await replica1.psql("INSERT INTO ledger (id, payload) VALUES (1, 'x')", { db: cluster.roles.appDatabase, allowFail: true });
    expect(insert.code).not.toBe(0);
    expect(insert.stderr).toContain("cannot execute INSERT in a read-only transaction");
    expect(await replica1.isInRecovery()).toBe(true);

    // Rows acknowledged while the base backups ran are on the replicas.
    const duringClone = writer.acks.filter((a) => a.at >= cloneStart && a.at <= cloneEnd);
    expect(duringClone.length).toBeGreaterThan(0);
    await assertNothingLost(writer, [replica1, replica2]);
    expect(await missingAcks(replica1, duringClone)).toEqual([]);
    expect(await missingAcks(replica2, duringClone)).toEqual([]);
    console.log(`[bootstrap] ${duringClone.length} writes acknowledged during the base backups (${cloneEnd - cloneStart} ms) arrived; ${elapsed()}`);

    // The entrypoint on existing standby data starts it without cloning.
    const sysid = await replica1.systemIdentifier();
    const primaryLogBefore = main.log();
    const replicaLogAt = replica1.logLength();
    writeFileSync(join(replica1.dataDir, "synaxic-marker"), "kept\n");
    await replica1.stop("fast");
    await replica1.startReplica("replica", main);
    await main.waitStreaming(replica1);
    expect(await replica1.systemIdentifier()).toBe(sysid);
    expect(await replica1.value("SELECT pg_read_file('synaxic-marker')")).toBe("kept");
    expect(replica1.log(replicaLogAt)).toContain("existing standby data");
    expect(replica1.log(replicaLogAt)).not.toContain("cloning the primary");
    expect(countOf(main.log(), BASE_BACKUP)).toBe(countOf(primaryLogBefore, BASE_BACKUP));
    expect(countOf(primaryLogBefore, BASE_BACKUP)).toBe(2);

    // The primary's guard refuses a replica's data directory.
    const guard = await replica1.runEntrypoint(replica1.primaryEntrypoint());
    expect(guard.code).toBe(1);
    expect(guard.stderr).toContain("FATAL: ");
    expect(guard.stderr).toContain("standby.signal present");
  });

  it("the settings the program restarts for are exactly those of its postgresql.conf that PostgreSQL reads only at start", async () => {
    for (const node of [main, replica1]) {
      const names = parsePostgresqlConf(readFileSync(node.confFile, "utf8")).map(([k]) => k);
      const rows = await node.psql(`SELECT name || ':' || context FROM pg_settings WHERE name IN (${names.map((n) => `'${n}'`).join(", ")}) ORDER BY 1`);
      const known = rows.stdout.trim().split("\n").filter(Boolean).map((r) => r.split(":") as [string, string]);
      expect(known.length, `${node.name}: every setting in the file is a real one`).toBe(names.length);
      const postmaster = known.filter(([, ctx]) => ctx === "postmaster").map(([n]) => n).sort();
      expect(restartSettingNames(readFileSync(node.confFile, "utf8")).sort(), node.name).toEqual(postmaster);
    }
  });

  it("pg_hba refuses other addresses, plain TCP, wrong passwords and roles asking for the wrong kind of connection", async () => {
    const r = cluster.roles;
    const expectRefused = async (from: Host, conninfo: string, sql: string, message: RegExp) => {
      const res = await cluster.remotePsql(from, conninfo, sql, { allowFail: true });
      expect(res.code, `${from.name}: ${conninfo} should be refused`).not.toBe(0);
      expect(res.stderr).toMatch(message);
    };
    const q = (s: string) => s.replace(/\./g, "\\.");

    // Allowed: the app over TLS, verified against the CA (TLS 1.2+); replication from a replica.
    const ok = await cluster.remotePsql(app, cluster.conninfo(main), "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    expect(ok.stdout.trim()).toMatch(/^t\|TLSv1\.[23]$/);
    const repl = await cluster.remotePsql(replica1.host, cluster.conninfo(main, { user: r.replication.name, replication: true }), "IDENTIFY_SYSTEM");
    expect(repl.stdout.trim().split("|")[0]).toBe(await main.systemIdentifier());

    // A host that is not an app host, even with the right password.
    await expectRefused(outsider, cluster.conninfo(main), "SELECT 1", new RegExp(`pg_hba.conf rejects connection for host "${q(outsider.ip)}", user "synaxic", database "synaxic"`));
    // Replication from a non-replica address, even with the right role and password.
    await expectRefused(outsider, cluster.conninfo(main, { user: r.replication.name, replication: true }), "IDENTIFY_SYSTEM", new RegExp(`pg_hba.conf rejects replication connection for host "${q(outsider.ip)}", user "replicator"`));
    await expectRefused(app, cluster.conninfo(main, { user: r.replication.name, replication: true }), "IDENTIFY_SYSTEM", /pg_hba.conf rejects replication connection/);
    // The app host without TLS.
    await expectRefused(app, cluster.conninfo(main, { sslmode: "disable" }), "SELECT 1", /pg_hba.conf rejects connection for host .* database "synaxic", no encryption/);
    // A wrong password.
    const wrong = join(net.mkdir("wrong-pass"), "pgpass");
    writeFileSync(wrong, renderPgpass([{ host: "*", port: "*", user: r.app.name, password: `${r.app.password}-wrong` }]), { mode: 0o600 });
    await expectRefused(app, cluster.conninfo(main, { passfile: wrong }), "SELECT 1", /password authentication failed for user "synaxic"/);
    // The app role asking for a replication connection.
    await expectRefused(app, cluster.conninfo(main, { replication: true }), "IDENTIFY_SYSTEM", new RegExp(`pg_hba.conf rejects replication connection for host "${q(app.ip)}", user "synaxic"`));
    // The replication role asking for a normal database, from a replica's own address.
    await expectRefused(replica1.host, cluster.conninfo(main, { user: r.replication.name }), "SELECT 1", new RegExp(`pg_hba.conf rejects connection for host "${q(replica1.host.ip)}", user "replicator", database "synaxic"`));
    // Other roles only from their own hosts; the superuser never over the network.
    await expectRefused(app, cluster.conninfo(main, { user: r.exporter.name, dbname: "postgres" }), "SELECT 1", /pg_hba.conf rejects connection/);
    await expectRefused(app, cluster.conninfo(main, { user: r.rewind.name, dbname: "postgres" }), "SELECT 1", /pg_hba.conf rejects connection/);
    await expectRefused(replica1.host, cluster.conninfo(main, { user: "postgres", dbname: "postgres" }), "SELECT 1", /pg_hba.conf rejects connection/);
    // The client really verifies the server: a certificate from another CA is refused.
    const otherCa = makeCa("other-ca", net.mkdir("other-ca"));
    await expectRefused(app, cluster.conninfo(main).replace(cluster.ca.certFile, otherCa.certFile), "SELECT 1", /certificate verify failed/);
  });

  it("the exporter's custom queries report replication and slots on the primary and recovery on a replica", async () => {
    primaryExporter = await PgExporter.start(cluster, monitor, main, 9187);
    replicaExporter = await PgExporter.start(cluster, monitor, replica1, 9188);

    const active = await samples(primaryExporter, main, "synaxic_slot_active");
    expect(active.map((s) => [s.labels.slot_name, s.value]).sort()).toEqual([
      ["synaxic_replica1", 1],
      ["synaxic_replica2", 1],
    ]);
    for (const s of active) expect(Object.keys(s.labels).sort()).toEqual(["slot_name"]);
    expect((await samples(primaryExporter, main, "synaxic_slot_lost")).map((s) => s.value)).toEqual([0, 0]);
    for (const s of await samples(primaryExporter, main, "synaxic_slot_retained_bytes")) expect(s.value).toBeGreaterThanOrEqual(0);

    const lag = await samples(primaryExporter, main, "synaxic_replication_lag_bytes");
    expect(lag.map((s) => s.labels).sort((a, b) => a.application_name!.localeCompare(b.application_name!))).toEqual([
      { application_name: "replica1", client_addr: replica1.host.ip, state: "streaming" },
      { application_name: "replica2", client_addr: replica2.host.ip, state: "streaming" },
    ]);
    for (const s of lag) expect(Number.isFinite(s.value) && s.value >= 0).toBe(true);
    const replay = await samples(primaryExporter, main, "synaxic_replication_replay_lag_seconds");
    expect(replay.map((s) => Object.keys(s.labels).sort())).toEqual([
      ["application_name", "client_addr"],
      ["application_name", "client_addr"],
    ]);
    for (const s of replay) expect(Number.isFinite(s.value) && s.value >= 0).toBe(true);
    expect((await samples(primaryExporter, main, "synaxic_recovery_in_recovery")).map((s) => s.value)).toEqual([0]);

    expect((await samples(replicaExporter, replica1, "synaxic_recovery_in_recovery")).map((s) => s.value)).toEqual([1]);
    const replicaLag = await samples(replicaExporter, replica1, "synaxic_recovery_replay_lag_bytes");
    expect(replicaLag).toHaveLength(1);
    expect(replicaLag[0]!.value).toBeGreaterThanOrEqual(0);
    expect(await samples(replicaExporter, replica1, "synaxic_replication_lag_bytes")).toEqual([]);
    // The rig's status view agrees.
    const status = await main.replicationStatus();
    expect(status).toMatchObject({ role: "primary", timeline: 1 });
    expect(status.replicas.map((r) => [r.name, r.address, r.state, r.ssl])).toEqual([
      ["replica1", replica1.host.ip, "streaming", true],
      ["replica2", replica2.host.ip, "streaming", true],
    ]);
    expect(status.slots.map((sl) => [sl.name, sl.active, sl.walStatus])).toEqual([
      ["synaxic_replica1", true, "reserved"],
      ["synaxic_replica2", true, "reserved"],
    ]);
    expect((await replica1.replicationStatus()).role).toBe("replica");
    // The queries load and run without errors on both.
    for (const e of [primaryExporter, replicaExporter]) {
      const text = await e.scrape();
      expect(text).toMatch(/^pg_up 1$/m);
      expect(text).not.toMatch(/^pg_exporter_user_queries_load_error\{[^}]*\} 1$/m);
      expect(text).toMatch(/^pg_exporter_last_scrape_error 0$/m);
    }
  });

  it("a slot a replica's replication role creates on its own shows in the exporter's slot metrics (SynaxicUnexpectedReplicationSlot fires on it) until dropped", async () => {
    const r = cluster.roles;
    // PostgreSQL has no grant narrower than REPLICATION: the role may create a slot.
    await cluster.remotePsql(replica1.host, cluster.conninfo(main, { user: r.replication.name, replication: true }), "CREATE_REPLICATION_SLOT rogue_hold PHYSICAL RESERVE_WAL;");
    try {
      const names = (await samples(primaryExporter!, main, "synaxic_slot_active")).map((s) => s.labels.slot_name).sort();
      expect(names).toEqual(["rogue_hold", "synaxic_replica1", "synaxic_replica2"]);
    } finally {
      await main.psql("SELECT pg_drop_replication_slot('rogue_hold');");
    }
    expect((await samples(primaryExporter!, main, "synaxic_slot_active")).map((s) => s.labels.slot_name).sort()).toEqual(["synaxic_replica1", "synaxic_replica2"]);
  });

  it("a replica killed and another cut off for 30 s under write load catch up through their slots without re-cloning, losing nothing", async () => {
    const writer = new LedgerWriter({ cluster, from: app, conninfo: cluster.conninfo(main) }).start();
    await writer.waitForAcks(50);
    const baseBackups = countOf(main.log(), BASE_BACKUP);
    const ids = [await replica1.systemIdentifier(), await replica2.systemIdentifier()];
    const r1LogAt = replica1.logLength();
    const retained = async () =>
      Number(await main.value(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots WHERE slot_name = '${replica2.slotName}'`));

    await replica1.kill();
    await replica2.host.cut();
    const cutAt = Date.now();
    const retainedAtCut = await retained();
    await writer.waitForAcks(300);
    // replica1 comes back through the entrypoint, from its own data.
    await replica1.startReplica("replica", main);
    await main.waitStreaming(replica1);
    const r1Back = Date.now() - cutAt;

    // replica2 stays cut off for 30 s; its slot keeps the WAL it has not confirmed.
    await sleep(Math.max(0, 30_000 - (Date.now() - cutAt) - 3000));
    const exported = (await samples(primaryExporter!, main, "synaxic_slot_retained_bytes")).find((s) => s.labels.slot_name === replica2.slotName);
    const retainedLate = await retained();
    expect(retainedLate).toBeGreaterThan(retainedAtCut + 100_000);
    expect(exported!.value).toBeGreaterThan(retainedAtCut + 100_000);
    await sleep(Math.max(0, 30_000 - (Date.now() - cutAt)));
    await replica2.host.restore();
    const restoredAt = Date.now();
    await writer.waitForAcks(100);
    await assertNothingLost(writer, [replica1, replica2]);
    const caughtUp = Date.now() - restoredAt;
    await main.waitStreaming(replica2);

    expect(countOf(main.log(), BASE_BACKUP)).toBe(baseBackups);
    expect([await replica1.systemIdentifier(), await replica2.systemIdentifier()]).toEqual(ids);
    expect(replica1.log(r1LogAt)).toContain("existing standby data");
    console.log(
      `[replica outage] ${writer.ackCount} acknowledged writes, none lost; replica1 back ${r1Back} ms after SIGKILL; ` +
        `replica2 cut ${restoredAt - cutAt} ms, slot held ${retainedLate} bytes for it, caught up ${caughtUp} ms after restore; ${elapsed()}`,
    );
  });

  it("a primary killed with SIGKILL and restarted without failover keeps its timeline and every acknowledged write; the replicas resume", async () => {
    const writer = new LedgerWriter({ cluster, from: app, conninfo: cluster.conninfo(main) }).start();
    await writer.waitForAcks(100);
    const timeline = await main.timeline();
    const sysid = await main.systemIdentifier();
    await main.kill();
    const killedAt = Date.now();
    const acksAtKill = writer.ackCount;
    await main.startPrimary();
    await writer.waitForAcks(100);
    const firstAfter = writer.acks[acksAtKill]!;
    const lastBefore = writer.acks[acksAtKill - 1]!;
    expect(await main.isInRecovery()).toBe(false);
    expect(await main.timeline()).toBe(timeline);
    expect(await main.systemIdentifier()).toBe(sysid);
    expect(main.log()).toMatch(/database system was interrupted|was not properly shut down/);
    await main.waitStreaming(replica1);
    await main.waitStreaming(replica2);
    await assertNothingLost(writer, [replica1, replica2]);
    expect(await replica1.timeline()).toBe(timeline);
    console.log(
      `[primary crash] ${writer.ackCount} acknowledged writes, none lost; writes resumed ${firstAfter.at - lastBefore.at} ms after the last one before the kill ` +
        `(restart took ${firstAfter.at - killedAt} ms); ${writer.unknown} writes in flight had no answer; ${elapsed()}`,
    );
  });

  it("removing a replica drops its slot (terminating its walsender) and the primary stops keeping WAL for it", async () => {
    const slot = replica2.slotName;
    const [holder, restartLsn] = (await main.query(`SELECT active_pid, restart_lsn FROM pg_replication_slots WHERE slot_name = '${slot}'`))[0]!;
    expect(holder).toMatch(/^\d+$/);
    const r2LogAt = replica2.logLength();
    await main.psql(renderSlotDropSql(slot));
    expect(await main.value(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = '${slot}'`)).toBe("0");
    expect(await main.value(`SELECT count(*) FROM pg_stat_activity WHERE pid = ${holder}`)).toBe("0");
    // The replica cannot quietly recreate it.
    await waitFor("replica2 to be refused its slot", async () => replica2.log(r2LogAt).includes(`replication slot "${slot}" does not exist`), 20_000);
    // Idempotent.
    await main.psql(renderSlotDropSql(slot));
    await replica2.kill();

    // WAL written after the removal is not held for it: after a checkpoint, the
    // segment the dropped slot needed is gone, while replica1's slot keeps up.
    await main.psql("INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(200001, 260000) g", { db: cluster.roles.appDatabase });
    for (let i = 0; i < 2; i++) {
      await main.psql("SELECT pg_switch_wal(); SELECT txid_current();");
      await replica1.waitReplayed(await main.lsn());
      await main.psql("CHECKPOINT");
    }
    const [oldest, needed] = (await main.query(`SELECT min(name), pg_walfile_name('${restartLsn}') FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'`))[0]!;
    expect(oldest! > needed!).toBe(true);
    expect(await main.query("SELECT slot_name, active FROM pg_replication_slots")).toEqual([[replica1.slotName, "t"]]);

    // Creating a slot is idempotent too, and it reserves WAL at once.
    await main.psql(renderSlotCreateSql("synaxic_spare"));
    await main.psql(renderSlotCreateSql("synaxic_spare"));
    expect(await main.query("SELECT count(*), bool_and(restart_lsn IS NOT NULL) FROM pg_replication_slots WHERE slot_name = 'synaxic_spare'")).toEqual([["1", "t"]]);
    await main.psql(renderSlotDropSql("synaxic_spare"));
    expect(await main.value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'synaxic_spare'")).toBe("0");
  });
});
