/**
 * Replication benchmark on the integration rig: `sudo npm run bench:replication [-- --seconds N --cut N]`.
 *
 * Starts a primary and one streaming replica from the rendered configuration
 * (TLS, replication slot) in network namespaces, then measures and prints:
 *   1. write throughput and replica lag under load (--seconds, default 20),
 *   2. catch-up after the replica's link is cut under load (--cut, default 10),
 *   3. the write gap of a planned failover (clean stop, rendered promote SQL).
 * It prints what it measured and asserts nothing. The rig is always torn down.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { cpus } from "node:os";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../test/rig/net";
import { makeCa } from "../test/rig/pki";
import { LedgerWriter, PgCluster, PgNode, ledgerTableSql, lsnDiff, missingAcks, startPrimaryWithRoles, type Ack } from "../test/rig/postgres";
import { renderPromoteSql } from "../templates/postgres";
import { log, runBench, runOnRig } from "./rig-run";
import { extremes } from "./report";

/** Concurrent writers, each with its own session and ledger table, writing back to back. */
const WRITERS = 2;
/** Bytes of payload per row. */
const PAYLOAD_BYTES = 200;
/** Interval between lag samples. */
const SAMPLE_MS = 200;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Options {
  seconds: number;
  cut: number;
}

export function parseArgs(argv: readonly string[]): Options {
  const opts: Options = { seconds: 20, cut: 10 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--help" || flag === "-h") {
      process.stdout.write("usage: npm run bench:replication -- [--seconds N] [--cut N]\n  --seconds N  load duration for throughput and lag (default 20)\n  --cut N      how long the replica's link is cut (default 10)\n");
      process.exit(0);
    }
    const key = flag === "--seconds" ? "seconds" : flag === "--cut" ? "cut" : undefined;
    if (!key) throw new Error(`unknown argument ${flag} (expected --seconds N, --cut N)`);
    const value = Number(argv[++i]);
    if (!Number.isFinite(value) || value <= 0 || value > 600) throw new Error(`${flag} needs a number of seconds in (0, 600]`);
    opts[key] = value;
  }
  return opts;
}

/** Nearest-rank percentile of a list of numbers (undefined when empty). */
function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function fmt(v: number | undefined, digits = 0): string {
  return v === undefined ? "n/a" : v.toFixed(digits);
}

/**
 * A psql session kept open as the local superuser over the server's Unix
 * socket, so that frequent samples cost a round trip rather than a process
 * start each.
 */
export class Session {
  private readonly child: ChildProcess;
  private buffer = "";
  private lines: string[] = [];
  private seq = 0;
  private pending?: { marker: string; resolve: (rows: string[][]) => void; reject: (e: Error) => void };
  private exited = false;

  constructor(readonly node: PgNode) {
    const psql = join(node.cluster.bin, "psql");
    this.child = spawn(
      "ip",
      ["netns", "exec", node.host.ns, "runuser", "-u", "postgres", "--", psql, "-X", "-q", "-A", "-t", "-h", node.socketDir, "-p", String(node.port), "-U", "postgres", "-d", "postgres"],
      { stdio: ["pipe", "pipe", "ignore"] },
    );
    node.cluster.net.procs.push(this.child);
    this.child.stdin!.on("error", () => undefined);
    this.child.stdout!.setEncoding("utf8");
    this.child.stdout!.on("data", (d: string) => this.onData(d));
    this.child.on("exit", () => {
      this.exited = true;
      this.pending?.reject(new Error(`${node.name}: psql session ended`));
      this.pending = undefined;
    });
  }

  private onData(d: string): void {
    this.buffer += d;
    let nl: number;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      const p = this.pending;
      if (!p) continue;
      if (line === p.marker) {
        this.pending = undefined;
        const rows = this.lines.map((l) => l.split("|"));
        this.lines = [];
        p.resolve(rows);
      } else if (line.length > 0) this.lines.push(line);
    }
  }

  /** Rows of one query (an error shows up as no rows). */
  query(sql: string): Promise<string[][]> {
    if (this.exited) return Promise.reject(new Error(`${this.node.name}: psql session ended`));
    if (this.pending) return Promise.reject(new Error("one query at a time"));
    const marker = `@@${process.pid}-${++this.seq}`;
    return new Promise((resolve, reject) => {
      this.pending = { marker, resolve, reject };
      this.lines = [];
      this.child.stdin!.write(`${sql};\n\\echo ${marker}\n`);
    });
  }

  /** The first row of a query, which must have one. */
  async row(sql: string): Promise<string[]> {
    const rows = await this.query(sql);
    if (!rows[0]) throw new Error(`${this.node.name}: no row from ${sql}`);
    return rows[0];
  }

  close(): void {
    if (!this.exited) this.child.stdin!.end();
  }
}

function controlData(cluster: PgCluster, node: PgNode, field: string): string {
  const out = execFileSync(join(cluster.bin, "pg_controldata"), [node.dataDir], { encoding: "utf8" });
  const m = new RegExp(`^${field}:\\s*(.*)$`, "m").exec(out);
  if (!m) throw new Error(`pg_controldata: no ${field}`);
  return m[1]!.trim();
}

function allAcks(writers: readonly LedgerWriter[]): Ack[] {
  return writers.flatMap((w) => w.acks);
}

function acksBetween(writers: readonly LedgerWriter[], from: number, to: number): number {
  return allAcks(writers).filter((a) => a.at > from && a.at <= to).length;
}

export interface Summary {
  label: string;
  value: string;
  unit: string;
}

/** The rig hosts bench() needs. */
export const HOSTS = ["main", "replica1", "app"];

/** Runs the measurements on a rig of HOSTS, adding what it measured to summary. */
export async function bench(opts: Options, net: TestNet, summary: Summary[]): Promise<void> {
  const add = (label: string, value: string, unit: string) => summary.push({ label, value, unit });
  const app: Host = net.host("app");
  const cluster = new PgCluster({
    net,
    ca: makeCa("pg-bench-ca", net.mkdir("ca")),
    dbHosts: [net.host("main"), net.host("replica1")],
    appHosts: [app],
    exporterHosts: [],
  });
  const main = cluster.node(net.host("main"));
  const replica = cluster.node(net.host("replica1"));

  // 1. A primary and one replica, as the integration tests start them.
  log("starting the primary (initdb, rendered roles SQL)");
  await startPrimaryWithRoles(main);
  const db = cluster.roles.appDatabase;
  const tables = Array.from({ length: WRITERS }, (_, i) => `ledger_${i + 1}`);
  await main.psql(tables.map((t) => ledgerTableSql(t, cluster.roles.app.name)).join(""), { db });
  log("starting the replica (base backup through its slot, TLS)");
  await replica.startReplica("replica", main);
  await main.waitStreaming(replica);
  const [ssl, slot] = (
    await main.query(
      `SELECT s.ssl, (SELECT slot_name FROM pg_replication_slots WHERE active_pid = r.pid) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = '${replica.name}'`,
    )
  )[0]!;
  log(`replica streaming: ssl=${ssl}, slot=${slot}; ${(await main.value("SHOW synchronous_commit")) === "on" ? "synchronous_commit on (local flush), " : ""}asynchronous replication`);

  // Writers follow whichever server is writable, so the same ones run through the failover.
  const conninfo = cluster.conninfo([main, replica], { targetSessionAttrs: "read-write", connectTimeout: 2 });
  const writers = tables.map((table) => new LedgerWriter({ cluster, from: app, conninfo, table, payloadBytes: PAYLOAD_BYTES, intervalMs: 0 }));
  const primary = new Session(main);
  const standby = new Session(replica);
  try {
    for (const w of writers) w.start();
    await Promise.all(writers.map((w) => w.waitForAcks(20)));

    // 2. Throughput and lag under load.
    log(`load: ${WRITERS} writers, one ${PAYLOAD_BYTES}-byte row per transaction, for ${opts.seconds} s; lag sampled every ${SAMPLE_MS} ms`);
    const lagBytes: number[] = [];
    const replayLagMs: number[] = [];
    let replayLagNull = 0;
    const loadStart = Date.now();
    const lsnStart = (await primary.row("SELECT pg_current_wal_lsn()"))[0]!;
    const loadEnd = loadStart + opts.seconds * 1000;
    for (let next = loadStart; next < loadEnd; next += SAMPLE_MS) {
      await sleep(Math.max(0, next - Date.now()));
      // Both servers are asked at the same moment over open sessions.
      const [[replayed], [current, replayLag]] = await Promise.all([
        standby.row("SELECT pg_last_wal_replay_lsn()"),
        primary.row(`SELECT pg_current_wal_lsn(), (SELECT extract(epoch FROM replay_lag) * 1000 FROM pg_stat_replication WHERE application_name = '${replica.name}')`),
      ]);
      lagBytes.push(Math.max(0, lsnDiff(current!, replayed!)));
      if (replayLag) replayLagMs.push(Number(replayLag));
      else replayLagNull++;
    }
    const loadStop = Date.now();
    const lsnEnd = (await primary.row("SELECT pg_current_wal_lsn()"))[0]!;
    const loadSeconds = (loadStop - loadStart) / 1000;
    const acked = acksBetween(writers, loadStart, loadStop);
    const wps = acked / loadSeconds;
    const walRate = lsnDiff(lsnEnd, lsnStart) / loadSeconds;
    log(`${acked} writes acknowledged in ${loadSeconds.toFixed(1)} s: ${wps.toFixed(0)} writes/s, WAL ${(walRate / 1024).toFixed(0)} KiB/s`);
    log(
      `replica lag (primary current LSN - replica replay LSN), ${lagBytes.length} samples: ` +
        `p50 ${fmt(percentile(lagBytes, 50))} B, p95 ${fmt(percentile(lagBytes, 95))} B, max ${fmt(percentile(lagBytes, 100))} B`,
    );
    log(
      `walsender replay_lag, ${replayLagMs.length} samples (${replayLagNull} null): ` +
        `p50 ${fmt(percentile(replayLagMs, 50), 2)} ms, p95 ${fmt(percentile(replayLagMs, 95), 2)} ms`,
    );
    add("writers", String(WRITERS), "sessions");
    add("write throughput", wps.toFixed(0), "acknowledged writes/s");
    add("WAL rate", (walRate / 1024).toFixed(0), "KiB/s");
    add("replica lag p50", fmt(percentile(lagBytes, 50)), "bytes");
    add("replica lag p95", fmt(percentile(lagBytes, 95)), "bytes");
    add("replica lag max", fmt(percentile(lagBytes, 100)), "bytes");
    add("replay_lag p50", fmt(percentile(replayLagMs, 50), 2), "ms");
    add("replay_lag p95", fmt(percentile(replayLagMs, 95), 2), "ms");

    // 3. Catch-up after the replica's link is cut under load.
    const slotRetained = `SELECT pg_current_wal_lsn(), pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), active FROM pg_replication_slots WHERE slot_name = '${replica.slotName}'`;
    const [receiverBefore] = await standby.row("SELECT pid FROM pg_stat_wal_receiver");
    const [lsnAtCut] = await primary.row(slotRetained);
    await replica.host.cut();
    const cutAt = Date.now();
    log(`replica link cut for ${opts.cut} s under load`);
    await sleep(opts.cut * 1000);
    const [target, retained, activeAtEnd] = await primary.row(slotRetained);
    await replica.host.restore();
    const restoredAt = Date.now();
    const acksDuringCut = acksBetween(writers, cutAt, restoredAt);
    // The receive position at restore tells when WAL starts flowing again (the
    // connection may first have to wait out TCP's retransmission back-off).
    const [receivedAtRestore] = await standby.row("SELECT pg_last_wal_receive_lsn()");
    let firstReceivedMs: number | undefined;
    let polls = 0;
    await waitFor(
      `the replica to replay up to ${target}`,
      async () => {
        polls++;
        const [received, replayed] = await standby.row("SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()");
        if (firstReceivedMs === undefined && lsnDiff(received!, receivedAtRestore!) > 0) firstReceivedMs = Date.now() - restoredAt;
        return lsnDiff(replayed!, target!) >= 0;
      },
      60_000,
      10,
    );
    const caughtUpMs = Date.now() - restoredAt;
    const [receiverAfter, receiverStatus] = await standby.row("SELECT pid, status FROM pg_stat_wal_receiver");
    const walDuringCut = lsnDiff(target!, lsnAtCut!);
    const cutMs = restoredAt - cutAt;
    log(
      `cut ${cutMs} ms: ${acksDuringCut} writes acknowledged meanwhile (${((acksDuringCut * 1000) / cutMs).toFixed(0)} writes/s), ` +
        `${walDuringCut} bytes of WAL written; slot retained ${retained} bytes at the end of the cut (active=${activeAtEnd})`,
    );
    log(
      `after restore: first new WAL received at ${fmt(firstReceivedMs)} ms, replayed up to the restore-time LSN ${target} at ${caughtUpMs} ms ` +
        `(${polls} polls); walreceiver ${receiverBefore === receiverAfter ? "kept its connection" : `reconnected (pid ${receiverBefore} -> ${receiverAfter})`}, now ${receiverStatus}`,
    );
    add("link cut", (cutMs / 1000).toFixed(1), "s");
    add("write throughput during cut", ((acksDuringCut * 1000) / cutMs).toFixed(0), "acknowledged writes/s");
    add("WAL written during cut", String(walDuringCut), "bytes");
    add("slot WAL retained at end of cut", String(Number(retained)), "bytes");
    add("first WAL received after restore", fmt(firstReceivedMs), "ms");
    add("catch-up after restore", String(caughtUpMs), "ms");

    // 4. Planned failover under load: clean stop, promote, writers follow.
    await sleep(1000);
    primary.close();
    const oldIp = main.host.ip;
    const newIp = replica.host.ip;
    log("stopping the primary (fast, clean) under load");
    const stopAt = Date.now();
    await main.stop("fast");
    const stoppedAt = Date.now();
    const checkpoint = controlData(cluster, main, "Latest checkpoint location");
    await replica.waitReplayed(checkpoint);
    const replayedAt = Date.now();
    const promote = await replica.psql(renderPromoteSql());
    const promotedAt = Date.now();
    if (promote.stdout.trim() !== "primary") throw new Error(`promotion answered ${JSON.stringify(promote.stdout.trim())}`);
    await waitFor("every writer to be acknowledged by the new primary", async () => writers.every((w) => w.acksFrom(newIp).length >= 20), 30_000, 50);
    await Promise.all(writers.map((w) => w.stop()));
    const acks = allAcks(writers);
    const oldAcks = acks.filter((a) => a.server === oldIp);
    const newAcks = acks.filter((a) => a.server === newIp);
    if (oldAcks.length === 0 || newAcks.length === 0) throw new Error(`no acknowledged writes from ${oldAcks.length === 0 ? "the old" : "the new"} primary`);
    const lastOld = extremes(oldAcks.map((a) => a.at))!.max;
    const firstNew = extremes(newAcks.map((a) => a.at))!.min;
    const gapMs = firstNew - lastOld;
    let missing = 0;
    for (const w of writers) missing += (await missingAcks(replica, w.acks, w.table)).length;
    const unknown = writers.reduce((n, w) => n + w.unknown, 0);
    const failed = writers.reduce((n, w) => n + w.failed, 0);
    log(
      `fast stop took ${stoppedAt - stopAt} ms (last ack from the old primary ${lastOld - stopAt} ms after it began); ` +
        `the replica had replayed the shutdown checkpoint ${checkpoint} ${replayedAt - stoppedAt} ms later; ` +
        `promote SQL took ${promotedAt - replayedAt} ms (first ack from the new primary ${firstNew - replayedAt} ms after it was sent)`,
    );
    log(
      `write gap ${gapMs} ms (last ack from ${oldIp} to first ack from ${newIp}); ${oldAcks.length + newAcks.length} acknowledged writes in all, ` +
        `${missing} missing on the new primary; ${unknown} writes without an answer, ${failed} refused (read-only or error)`,
    );
    add("failover write gap", String(gapMs), "ms");
    add("  fast stop", String(stoppedAt - stopAt), "ms");
    add("  promote SQL (incl. checkpoint)", String(promotedAt - replayedAt), "ms");
    add("acknowledged writes missing", String(missing), "writes");
  } finally {
    primary.close();
    standby.close();
    await Promise.all(writers.map((w) => w.stop().catch(() => undefined)));
  }
}

async function mainEntry(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const summary: Summary[] = [];
  const code = await runOnRig(HOSTS, (net) => bench(opts, net, summary));
  if (code !== 0) return code;
  const rows: Summary[] = [
    { label: "CPUs", value: String(cpus().length), unit: `(${cpus()[0]?.model.trim() ?? "unknown model"})` },
    { label: "load duration", value: String(opts.seconds), unit: "s" },
    ...summary,
  ];
  const width = Math.max(...rows.map((r) => r.label.length));
  const valueWidth = Math.max(...rows.map((r) => r.value.length));
  process.stdout.write("\nSummary\n");
  for (const r of rows) process.stdout.write(`  ${r.label.padEnd(width)}  ${r.value.padStart(valueWidth)} ${r.unit}\n`);
  return 0;
}

// Run from the command line; bench/all.ts imports bench() instead.
if (require.main === module) runBench(mainEntry);
