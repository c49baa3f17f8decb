/**
 * Unplanned failover on the integration rig, for the runner (bench/all.ts,
 * section "failover"; the planned one is bench/replication.ts's).
 *
 * A primary and one streaming replica (rendered configuration, TLS, slot);
 * writers on an app host follow whichever server is writable. Under their
 * load the primary is killed (SIGKILL of the postmaster and every backend at
 * once, as `docker kill` or a lost host would), and the replica is promoted
 * with the rendered promote SQL at once (so the figures leave out however
 * long noticing the loss takes). It prints the write gap (last write
 * acknowledged by the old primary to the first by the new one) and the
 * acknowledged writes missing on the new primary: replication is
 * asynchronous, so what the old primary acknowledged but had not yet sent
 * is lost. Several rounds, each on a fresh rig.
 */
import { waitFor, type Host, type TestNet } from "../test/rig/net";
import { makeCa } from "../test/rig/pki";
import { LedgerWriter, PgCluster, ledgerTableSql, missingAcks, startPrimaryWithRoles } from "../test/rig/postgres";
import { renderPromoteSql } from "../templates/postgres";
import { log } from "./rig-run";
import { extremes, fmtSpread } from "./report";

export interface Options {
  /** Rounds (each a fresh primary and replica). */
  rounds: number;
  /** Seconds of load before the kill. */
  loadSeconds: number;
  writers: number;
}

export const DEFAULTS: Options = { rounds: 3, loadSeconds: 10, writers: 2 };
export const QUICK: Options = { rounds: 1, loadSeconds: 3, writers: 2 };

/** The rig hosts bench() needs. */
export const HOSTS = ["main", "replica1", "app"];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Round {
  gapMs: number;
  promoteMs: number;
  acked: number;
  missing: number;
  unknown: number;
}

/** One round on a fresh rig of HOSTS (the runner starts one per round). */
export async function round(net: TestNet, n: number, opts: Options): Promise<Round> {
  const [mainHost, replicaHost, app] = HOSTS.map((h) => net.host(h)) as [Host, Host, Host];
  const cluster = new PgCluster({ net, ca: makeCa("failover-ca", net.mkdir("ca")), dbHosts: [mainHost, replicaHost], appHosts: [app], exporterHosts: [] });
  const main = cluster.node(mainHost);
  const replica = cluster.node(replicaHost);
  try {
    await startPrimaryWithRoles(main);
    const tables = Array.from({ length: opts.writers }, (_, i) => `ledger_${i + 1}`);
    await main.psql(tables.map((t) => ledgerTableSql(t, cluster.roles.app.name)).join(""), { db: cluster.roles.appDatabase });
    await replica.startReplica("replica", main);
    await main.waitStreaming(replica);
    const conninfo = cluster.conninfo([main, replica], { targetSessionAttrs: "read-write", connectTimeout: 2 });
    const writers = tables.map((table) => new LedgerWriter({ cluster, from: app, conninfo, table, payloadBytes: 200, intervalMs: 0 }));
    try {
      for (const w of writers) w.start();
      await Promise.all(writers.map((w) => w.waitForAcks(20)));
      await sleep(opts.loadSeconds * 1000);
      const killAt = Date.now();
      await main.kill();
      const killedAt = Date.now();
      const promote = await replica.psql(renderPromoteSql());
      const promotedAt = Date.now();
      if (promote.stdout.trim() !== "primary") throw new Error(`promotion answered ${JSON.stringify(promote.stdout.trim())}`);
      await waitFor("every writer to be acknowledged by the new primary", async () => writers.every((w) => w.acksFrom(replica.host.ip).length >= 20), 60_000, 50);
      await Promise.all(writers.map((w) => w.stop()));
      const acks = writers.flatMap((w) => w.acks);
      const oldAcks = acks.filter((a) => a.server === main.host.ip);
      const newAcks = acks.filter((a) => a.server === replica.host.ip);
      const lastOld = extremes(oldAcks.map((a) => a.at))!.max;
      const firstNew = extremes(newAcks.map((a) => a.at))!.min;
      let missing = 0;
      for (const w of writers) missing += (await missingAcks(replica, w.acks, w.table)).length;
      const unknown = writers.reduce((s, w) => s + w.unknown, 0);
      log(
        `unplanned round ${n}: kill took ${killedAt - killAt} ms, promote SQL ${promotedAt - killedAt} ms; write gap ${firstNew - lastOld} ms; ` +
          `${acks.length} acknowledged writes, ${missing} missing on the new primary; ${unknown} writes without an answer`,
      );
      return { gapMs: firstNew - lastOld, promoteMs: promotedAt - killedAt, acked: oldAcks.length, missing, unknown };
    } finally {
      await Promise.all(writers.map((w) => w.stop().catch(() => undefined)));
    }
  } finally {
    await replica.stop().catch(() => undefined);
    if (main.running()) await main.stop("immediate").catch(() => undefined);
  }
}

/** The figures over the rounds. */
export function summarize(rounds: readonly Round[], opts: Options, add: (label: string, value: string) => void): void {
  add("load", `${opts.writers} writers, one 200-byte row per transaction back to back, ${opts.loadSeconds} s before the kill; ${opts.rounds} round(s)`);
  add("write gap (last ack of the old primary to first of the new)", fmtSpread(rounds.map((r) => r.gapMs), 0, "ms"));
  add("  of it, promote SQL (incl. checkpoint)", fmtSpread(rounds.map((r) => r.promoteMs), 0, "ms"));
  add("acknowledged writes missing", `${fmtSpread(rounds.map((r) => r.missing), 0, "writes")} (of ${fmtSpread(rounds.map((r) => r.acked), 0, "")} acknowledged by the old primary)`);
  add("writes without an answer at the kill", fmtSpread(rounds.map((r) => r.unknown), 0, ""));
}
