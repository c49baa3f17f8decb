/**
 * A new replica's bootstrap on the integration rig, for the runner
 * (bench/all.ts, section "bootstrap").
 *
 * A primary from the rendered configuration filled to about `sizeMb` with
 * pgbench -i; then, alternating, `runs` times each:
 *   - the rendered replica entrypoint on an empty data directory: its slot,
 *     pg_basebackup over TLS (--wal-method=stream --checkpoint=fast), the
 *     server's start; timed from the entrypoint's start to the primary
 *     showing the replica streaming, with the clone's part read from the
 *     entrypoint's log lines ("cloning the primary" to "clone complete");
 *   - the baseline: a raw copy of the same data directory over the same
 *     namespace link, tar on the primary's host into a TCP connection to the
 *     replica's host, where tar unpacks it (no TLS, no checkpoint).
 * MB/s are of the primary's data directory without pg_wal's contents. It
 * asserts nothing.
 */
import { rmSync } from "node:fs";
import { waitFor, type Host, type TestNet } from "../test/rig/net";
import { makeCa } from "../test/rig/pki";
import { PgCluster, startPrimaryWithRoles } from "../test/rig/postgres";
import { join } from "node:path";
import { log } from "./rig-run";
import { fmtSpread, num, ratio, spreadOf } from "./report";

export interface Options {
  /** Database size to fill with pgbench -i (about 15 MB per scale unit). */
  sizeMb: number;
  runs: number;
}

export const DEFAULTS: Options = { sizeMb: 1024, runs: 2 };
export const QUICK: Options = { sizeMb: 100, runs: 1 };

/** The rig hosts bench() needs. */
export const HOSTS = ["main", "replica1"];

const MB = 1024 * 1024;
/** pgbench -i: about 15 MB on disk per scale unit with its indexes (bench/backup.ts measured scale 68 at about 1 GB). */
const MB_PER_SCALE = 15;
const RAW_PORT = 15432;

/** Polls a log every 20 ms and records when `text` first shows in it; returns the function that stops polling. */
function firstSeen(read: () => string, text: string, seen: { at?: number }): () => void {
  const timer = setInterval(() => {
    if (seen.at === undefined && read().includes(text)) seen.at = Date.now();
  }, 20);
  return () => clearInterval(timer);
}

async function rawCopy(from: Host, to: Host, dataDir: string, dest: string): Promise<number> {
  rmSync(dest, { recursive: true, force: true });
  const listener = `${JSON.stringify(process.execPath)} -e 'const s = require("net").createServer((c) => { c.pipe(process.stdout); c.on("end", () => s.close()); }); s.listen(${RAW_PORT}, "${to.ip}");' | (mkdir -p ${dest} && tar -xf - -C ${dest})`;
  const receiving = to.exec(["bash", "-c", `set -o pipefail; ${listener}`], { timeoutMs: 60 * 60_000 });
  await waitFor("the raw copy's listener", async () => (await to.exec(["ss", "-Hltn", `sport = :${RAW_PORT}`])).stdout.trim() !== "", 10_000, 20);
  const t0 = Date.now();
  await from.exec(["bash", "-c", `set -o pipefail; (tar -C ${dataDir} --exclude='./pg_wal/*' --warning=no-file-changed -cf - . || [ $? -eq 1 ]) > /dev/tcp/${to.ip}/${RAW_PORT}`], {
    timeoutMs: 60 * 60_000,
  });
  await receiving;
  const ms = Date.now() - t0;
  rmSync(dest, { recursive: true, force: true });
  return ms;
}

export async function bench(opts: Options, net: TestNet, add: (label: string, value: string) => void): Promise<void> {
  const [mainHost, replicaHost] = HOSTS.map((h) => net.host(h)) as [Host, Host];
  const cluster = new PgCluster({ net, ca: makeCa("bootstrap-ca", net.mkdir("ca")), dbHosts: [mainHost, replicaHost], appHosts: [], exporterHosts: [] });
  const main = cluster.node(mainHost);
  const replica = cluster.node(replicaHost);
  await startPrimaryWithRoles(main);
  const scale = Math.max(1, Math.round(opts.sizeMb / MB_PER_SCALE));
  log(`filling the primary: pgbench -i -s ${scale} (about ${opts.sizeMb} MB)`);
  const fillStart = Date.now();
  await main.psql("CREATE DATABASE pgbench");
  await mainHost.exec([join(cluster.bin, "pgbench"), "-i", "-q", "-s", String(scale), "-h", main.socketDir, "-p", String(main.port), "-U", "postgres", "pgbench"], {
    user: "postgres",
    timeoutMs: 60 * 60_000,
  });
  await main.psql("CHECKPOINT");
  const dirBytes = Number((await mainHost.exec(["du", "-sb", "--exclude=./pg_wal/*", "."], { cwd: main.dataDir })).stdout.split(/\s/)[0]);
  log(`filled in ${((Date.now() - fillStart) / 1000).toFixed(0)} s: data directory without pg_wal ${(dirBytes / MB).toFixed(0)} MiB`);

  const rawDest = join(net.mkdir("raw-copy"), "data");
  const rawMs: number[] = [];
  const cloneMs: number[] = [];
  const streamingMs: number[] = [];
  for (let run = 1; run <= opts.runs; run++) {
    const order = run % 2 === 1 ? ["raw", "entrypoint"] : ["entrypoint", "raw"];
    for (const what of order) {
      if (what === "raw") {
        const ms = await rawCopy(mainHost, replicaHost, main.dataDir, rawDest);
        rawMs.push(ms);
        log(`run ${run}: raw copy (tar over TCP) ${(ms / 1000).toFixed(1)} s, ${(dirBytes / MB / (ms / 1000)).toFixed(0)} MB/s`);
        continue;
      }
      if (streamingMs.length > 0) {
        // A fresh replica again: the entrypoint drops the stale slot and clones anew.
        await replica.stop();
        replica.wipe();
      }
      const before = replica.logLength();
      const cloning: { at?: number } = {};
      const cloned: { at?: number } = {};
      const stops = [firstSeen(() => replica.log(before), "cloning the primary", cloning), firstSeen(() => replica.log(before), "clone complete", cloned)];
      const t0 = Date.now();
      try {
        await replica.startReplica("replica", main, 60 * 60_000);
        await main.waitStreaming(replica, 60 * 60_000);
      } finally {
        for (const stop of stops) stop();
      }
      const streaming = Date.now() - t0;
      if (cloning.at === undefined || cloned.at === undefined) throw new Error(`the entrypoint's log does not show the clone:\n${replica.log(before).slice(-2000)}`);
      cloneMs.push(cloned.at - cloning.at);
      streamingMs.push(streaming);
      log(`run ${run}: entrypoint to streaming ${(streaming / 1000).toFixed(1)} s, of it the clone ${((cloned.at - cloning.at) / 1000).toFixed(1)} s, ${(dirBytes / MB / ((cloned.at - cloning.at) / 1000)).toFixed(0)} MB/s`);
    }
  }
  const mbps = (ms: number[]) => ms.map((m) => dirBytes / MB / (m / 1000));
  add("data", `pgbench -i -s ${scale}: data directory without pg_wal ${(dirBytes / MB).toFixed(0)} MiB; ${opts.runs} run(s) each, alternating`);
  add("base backup (entrypoint's pg_basebackup, TLS)", `${fmtSpread(mbps(cloneMs), 0, "MB/s")}; ${fmtSpread(cloneMs.map((m) => m / 1000), 1, "s")}`);
  add("raw copy over the same link (tar | TCP | tar)", `${fmtSpread(mbps(rawMs), 0, "MB/s")}; ${fmtSpread(rawMs.map((m) => m / 1000), 1, "s")}`);
  add("base backup / raw copy", `${num(ratio(spreadOf(mbps(cloneMs))?.median, spreadOf(mbps(rawMs))?.median), 2)} (medians of MB/s)`);
  add("entrypoint start to streaming", fmtSpread(streamingMs.map((m) => m / 1000), 1, "s"));
  await replica.stop();
  await main.stop();
}
