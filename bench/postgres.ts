/**
 * PostgreSQL under pgbench on the integration rig, for the runner
 * (bench/all.ts, section "postgres").
 *
 * A primary from the rendered configuration, pinned with its pgbench to one
 * CPU; then two streaming replicas (rendered replica entrypoint, TLS,
 * replication slots) pinned to another CPU, since on the rig they stand for
 * separate hosts. It measures, asserting nothing:
 *   1. pgbench -c 4 (TPC-B-like) tps with 0 replicas and with 2: the ratio is
 *      what streaming to two replicas costs the primary;
 *   2. during the load with replicas, commit -> visible on a replica: a probe
 *      commits a row on the primary every probeMs and polls both replicas for
 *      it every 2 ms; the latency is from the commit's acknowledgement to the
 *      first poll that sees it (to within a poll and its round trip). The
 *      probe's inserts run in the run without replicas too;
 *   3. the replicas' lag in bytes when the load stops, and the time until
 *      both have replayed everything the primary wrote;
 *   4. the exporter's lag metrics (the rendered queries, scraped from a
 *      monitoring host) over an idle period after that: they must stay flat;
 *   5. what synchronous replication costs (synchronousReplication any1: the
 *      rendered synchronous_standby_names = 'ANY 1 (both replicas)', turned
 *      on with a reload): the same pgbench with 2 replicas, its tps and
 *      average commit latency against the asynchronous run.
 */
import { execFileSync } from "node:child_process";
import { cpus } from "node:os";
import { join } from "node:path";
import { readdirSync, readFileSync } from "node:fs";
import { type Host, type TestNet } from "../test/rig/net";
import { makeCa } from "../test/rig/pki";
import { PgCluster, PgExporter, PgNode, lsnDiff, startPrimaryWithRoles } from "../test/rig/postgres";
import { Session } from "./replication";
import { log } from "./rig-run";
import { fmtPercentiles, fmtSpread, num, ratio } from "./report";

export interface Options {
  /** pgbench duration of each run. */
  seconds: number;
  /** pgbench clients. */
  clients: number;
  /** pgbench scale (-i -s). */
  scale: number;
  /** Idle time over which the exporter's lag metrics are scraped. */
  idleSeconds: number;
  /** Interval between commit -> visible probes. */
  probeMs: number;
}

export const DEFAULTS: Options = { seconds: 60, clients: 4, scale: 10, idleSeconds: 60, probeMs: 100 };
export const QUICK: Options = { seconds: 10, clients: 4, scale: 2, idleSeconds: 10, probeMs: 100 };

/** The rig hosts bench() needs. */
export const HOSTS = ["main", "replica1", "replica2", "mon"];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Pause between a probe's polls of a replica (so that polling does not load the replicas' CPU). */
const POLL_MS = 2;

/** Every descendant of pid (children, their children, ...), from /proc. */
export function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      /* exited meanwhile */
    }
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const [child, pp] of parent) {
      if (pp !== p) continue;
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

/**
 * Pins a running server (its postmaster and every process it has forked) to
 * one CPU with taskset; what the postmaster forks later inherits it.
 */
export function pinServer(node: PgNode, cpu: number): number {
  const pid = node.postmasterPid();
  if (pid === undefined) throw new Error(`${node.name}: not running, cannot pin it`);
  const pids = [pid, ...descendants(pid)];
  for (const p of pids) {
    try {
      execFileSync("taskset", ["-a", "-p", "-c", String(cpu), String(p)], { stdio: "ignore" });
    } catch {
      /* exited meanwhile */
    }
  }
  return pids.length;
}

/** The CPUs to pin to: the primary's and the replicas' (the same one on a single CPU). */
export function pinCpus(cpuCount: number): { primary: number; replicas: number } {
  return { primary: 0, replicas: cpuCount > 1 ? 1 : 0 };
}

/** Average latency in ms from pgbench's output ("latency average = 3.245 ms"). */
export function pgbenchLatencyMs(out: string): number | undefined {
  const m = /^latency average = ([\d.]+) ms/m.exec(out);
  return m ? Number(m[1]) : undefined;
}

/** tps from pgbench's output ("tps = 1234.5 (without initial connection time)"). */
export function pgbenchTps(out: string): number | undefined {
  const m = /^tps = ([\d.]+)/m.exec(out);
  return m ? Number(m[1]) : undefined;
}

async function pgbench(node: PgNode, cpu: number, db: string, opts: Options): Promise<{ tps: number; out: string }> {
  const bin = join(node.cluster.bin, "pgbench");
  const r = await node.host.exec(
    ["taskset", "-c", String(cpu), bin, "-n", "-c", String(opts.clients), "-j", "2", "-T", String(opts.seconds), "-h", node.socketDir, "-p", String(node.port), "-U", "postgres", db],
    { user: "postgres", timeoutMs: (opts.seconds + 120) * 1000 },
  );
  const tps = pgbenchTps(r.stdout);
  if (tps === undefined) throw new Error(`pgbench printed no tps:\n${r.stdout}${r.stderr}`);
  return { tps, out: r.stdout };
}

/** Probes commit -> visible until stopped: one row per probe on the primary, polled for on each replica. */
async function probeVisibility(primary: Session, replicas: Session[], everyMs: number, stop: () => boolean): Promise<{ latencies: number[]; timeouts: number }> {
  const latencies: number[] = [];
  let timeouts = 0;
  for (let id = 1; !stop(); id++) {
    const next = Date.now() + everyMs;
    await primary.query(`INSERT INTO visibility_probe (id) VALUES (${id})`);
    const acked = Date.now();
    await Promise.all(
      replicas.map(async (r) => {
        for (;;) {
          const rows = await r.query(`SELECT 1 FROM visibility_probe WHERE id = ${id}`);
          if (rows.length > 0) return latencies.push(Date.now() - acked);
          if (Date.now() - acked > 30_000) return timeouts++;
          await sleep(POLL_MS);
        }
      }),
    );
    await sleep(Math.max(0, next - Date.now()));
  }
  return { latencies, timeouts };
}

/** Waits until the primary has this many streaming standbys that can confirm a commit (sync_state quorum). */
async function waitSynchronous(primary: PgNode, n: number): Promise<void> {
  for (const deadline = Date.now() + 30_000; ; ) {
    const count = Number(await primary.value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'quorum'"));
    if (count >= n) return;
    if (Date.now() > deadline) throw new Error(`${primary.name}: ${count} of ${n} standbys in sync_state quorum after 30 s`);
    await sleep(200);
  }
}

export async function bench(opts: Options, net: TestNet, add: (label: string, value: string) => void): Promise<void> {
  const [mainHost, r1Host, r2Host, mon] = HOSTS.map((h) => net.host(h)) as [Host, Host, Host, Host];
  const cluster = new PgCluster({ net, ca: makeCa("pg-load-ca", net.mkdir("ca")), dbHosts: [mainHost, r1Host, r2Host], appHosts: [], exporterHosts: [mon] });
  const main = cluster.node(mainHost);
  const replicas = [cluster.node(r1Host), cluster.node(r2Host)];
  const cpu = pinCpus(cpus().length);

  log("starting the primary (initdb, rendered roles SQL)");
  await startPrimaryWithRoles(main);
  pinServer(main, cpu.primary);
  const db = "pgbench";
  await main.psql(`CREATE DATABASE ${db}`);
  await main.host.exec([join(cluster.bin, "pgbench"), "-i", "-q", "-s", String(opts.scale), "-h", main.socketDir, "-p", String(main.port), "-U", "postgres", db], {
    user: "postgres",
    timeoutMs: 30 * 60_000,
  });
  // In the postgres database, where the probe's sessions (bench/replication.ts's Session) connect.
  await main.psql("CREATE TABLE visibility_probe (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp()); CHECKPOINT;");
  add("load", `pgbench -c ${opts.clients} -j 2 -T ${opts.seconds} (TPC-B-like), scale ${opts.scale}, over the primary's socket`);
  add("pinning", cpus().length > 1 ? `primary and pgbench on CPU ${cpu.primary}, replicas on CPU ${cpu.replicas}` : "one CPU: nothing pinned apart");

  // The probe's inserts run in both runs, so that both carry the same extra load.
  const probed = async (replicaNodes: PgNode[]) => {
    const primarySession = new Session(main);
    const sessions = replicaNodes.map((r) => new Session(r));
    try {
      // The probes end a second before pgbench does, so that the lag at its end is pgbench's alone.
      const until = Date.now() + opts.seconds * 1000 - 1000;
      const probes = probeVisibility(primarySession, sessions, opts.probeMs, () => Date.now() >= until);
      const load = await pgbench(main, cpu.primary, db, opts);
      // 3. Lag when the load stops, over the open sessions (the primary asked first, so that a
      // replica's figure is never below the true one), and the time until every replica has
      // replayed the primary's LSN at that moment, polled every 2 ms.
      const stoppedAt = Date.now();
      const [stopLsn] = await primarySession.row("SELECT pg_current_wal_lsn()");
      const lagAtStop: number[] = [];
      const caughtUpMs: number[] = [];
      await Promise.all(
        sessions.map(async (x, i) => {
          for (;;) {
            const [replayed] = await x.row("SELECT pg_last_wal_replay_lsn()");
            const lag = lsnDiff(stopLsn!, replayed!);
            lagAtStop[i] ??= Math.max(0, lag);
            if (lag <= 0) return void (caughtUpMs[i] = Date.now() - stoppedAt);
            if (Date.now() - stoppedAt > 120_000) throw new Error(`${replicaNodes[i]!.name} did not replay up to ${stopLsn} within 120 s`);
            await sleep(POLL_MS);
          }
        }),
      );
      return { load, visibility: await probes, lagAtStop, caughtUpMs };
    } finally {
      primarySession.close();
      for (const x of sessions) x.close();
    }
  };

  log(`pgbench with 0 replicas (${opts.seconds} s)`);
  const alone = (await probed([])).load;
  log(`0 replicas: ${alone.tps.toFixed(0)} tps`);

  log("starting 2 replicas (rendered replica entrypoint: base backup through their slots, TLS)");
  for (const r of replicas) {
    await r.startReplica("replica", main, 10 * 60_000);
    await main.waitStreaming(r);
    pinServer(r, cpu.replicas);
  }

  // 2. pgbench with 2 replicas, commit -> visible probed meanwhile.
  log(`pgbench with 2 replicas (${opts.seconds} s), commit -> visible probed every ${opts.probeMs} ms`);
  const { load: withReplicas, visibility, lagAtStop, caughtUpMs } = await probed(replicas);
  log(`2 replicas: ${withReplicas.tps.toFixed(0)} tps; lag at the load's end ${lagAtStop.join(", ")} bytes, 0 after ${caughtUpMs.join(", ")} ms`);
  add("tps, 0 replicas", alone.tps.toFixed(0));
  add("tps, 2 replicas", withReplicas.tps.toFixed(0));
  add("tps ratio, 2 replicas / 0", num(ratio(withReplicas.tps, alone.tps), 2));
  add("commit -> visible on a replica", `${fmtPercentiles(visibility.latencies, 1, "ms")}${visibility.timeouts ? `, ${visibility.timeouts} not visible after 30 s` : ""}`);
  add("lag when the load stops", `${lagAtStop.map((b, i) => `${replicas[i]!.name} ${b}`).join(", ")} bytes`);
  add("lag to 0 bytes after the load stops", `${caughtUpMs.map((ms, i) => `${replicas[i]!.name} ${ms} ms`).join(", ")} (polled every ${POLL_MS} ms from pgbench's exit)`);

  // 4. The exporter's lag metrics on an idle cluster.
  const exporters = [await PgExporter.start(cluster, mon, main, 9187), await PgExporter.start(cluster, mon, replicas[0]!, 9188)];
  log(`scraping the exporter's lag metrics for ${opts.idleSeconds} s of idle`);
  const lagBytes: number[] = [];
  const lagSeconds: number[] = [];
  const recoveryBytes: number[] = [];
  const end = Date.now() + opts.idleSeconds * 1000;
  while (Date.now() < end) {
    for (const s of await exporters[0]!.samples("synaxic_replication_lag_bytes")) lagBytes.push(s.value);
    for (const s of await exporters[0]!.samples("synaxic_replication_replay_lag_seconds")) lagSeconds.push(s.value);
    for (const s of await exporters[1]!.samples("synaxic_recovery_replay_lag_bytes")) recoveryBytes.push(s.value);
    await sleep(Math.min(5000, Math.max(0, end - Date.now())));
  }
  add(`idle ${opts.idleSeconds} s: synaxic_replication_lag_bytes`, fmtSpread(lagBytes, 0, "bytes"));
  add(`idle ${opts.idleSeconds} s: synaxic_replication_replay_lag_seconds`, fmtSpread(lagSeconds, 3, "s"));
  add(`idle ${opts.idleSeconds} s: synaxic_recovery_replay_lag_bytes`, fmtSpread(recoveryBytes, 0, "bytes"));

  // 5. Synchronous replication: the primary's configuration rendered with ANY 1 of the replicas, reloaded.
  cluster.opts.synchronous = true;
  main.writeConfig("primary");
  await main.psql("SELECT pg_reload_conf()");
  await waitSynchronous(main, replicas.length);
  log(`pgbench with 2 replicas and synchronous_standby_names ${await main.value("SHOW synchronous_standby_names")} (${opts.seconds} s)`);
  const { load: synchronous, visibility: syncVisibility } = await probed(replicas);
  log(`2 replicas, any1: ${synchronous.tps.toFixed(0)} tps`);
  const asyncLatency = pgbenchLatencyMs(withReplicas.out);
  const syncLatency = pgbenchLatencyMs(synchronous.out);
  add("tps, 2 replicas, synchronousReplication any1", synchronous.tps.toFixed(0));
  add("tps ratio, any1 / off (2 replicas)", num(ratio(synchronous.tps, withReplicas.tps), 2));
  add("commit latency average (pgbench), off / any1", `${num(asyncLatency, 3)} / ${num(syncLatency, 3)} ms (x${num(ratio(syncLatency, asyncLatency), 2)})`);
  add("commit -> visible on a replica, any1", `${fmtPercentiles(syncVisibility.latencies, 1, "ms")}${syncVisibility.timeouts ? `, ${syncVisibility.timeouts} not visible after 30 s` : ""}`);
  for (const r of replicas) await r.stop();
  await main.stop();
}
