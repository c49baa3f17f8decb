/**
 * Backup benchmark on the integration rig:
 * `sudo npm run bench:backup [-- --size-mb N --runs N --seconds N --clients N]`.
 *
 * A primary archiving into the rig's S3 stand-in (its own namespace, HTTPS
 * verified by DNS name) with the rendered pgbackrest.conf (zst, aes-256-cbc,
 * bundling, process-max and async archiving as the deployment renders them)
 * and the rendered postgresql.conf with its archiving settings. It measures
 * and prints, asserting nothing:
 *   1. full backup throughput (MB/s of the data directory) against a raw copy
 *      of the same data directory to the same endpoint (tar piped into one
 *      curl PUT), --runs times each, alternating;
 *   2. archive lag under pgbench load (--clients, --seconds), sampled every
 *      200 ms;
 *   3. a point-in-time restore into a new data directory on another host,
 *      replaying the WAL of that load, until the server is promoted and
 *      answers.
 * The rig is always torn down.
 */
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { cpus } from "node:os";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { TestNet, waitFor, type Host } from "../test/rig/net";
import { makeCa, type TestCa } from "../test/rig/pki";
import { PgCluster, PgNode, lsnDiff, lsnToBigInt, startPrimaryWithRoles } from "../test/rig/postgres";
import { S3StandIn } from "../test/rig/s3";
import { setRigHosts } from "../test/rig/dns";
import { renderPostgresqlConf } from "../templates/postgres-conf";
import {
  archiveSettings,
  backupArgv,
  infoArgv,
  parsePgbackrestInfo,
  renderPgbackrestConf,
  renderPgbackrestSecrets,
  restoreArgv,
  stanzaCreateArgv,
  PGBACKREST_DEFAULTS,
  type PgbackrestInvocation,
  type PgbackrestSecrets,
} from "../templates/pgbackrest";
import { log, runBench, runOnRig } from "./rig-run";
import { renderS3CurlCredentials } from "../templates/redis-backup";

const STANZA = "synaxic";
const BUCKET = "bkb-backups";
const REGION = "bkb-rig-1";
const S3_NAME = "s3.bkb.test";
const S3_PORT = 9443;
const REPO_PATH = "/synaxic";
/** Interval between archive-lag samples. */
const SAMPLE_MS = 200;
/** A small VPS's PostgreSQL: PGTune inputs for both servers. */
const TUNE = { memoryMiB: 1024, cpus: 2, maxConnections: 40 };
/** Database pgbench fills and loads. */
const PGBENCH_DB = "pgbench";
/**
 * pgbench's scale factor is 100,000 rows of pgbench_accounts; one unit takes
 * about 15 MB on disk with its indexes (measured on this rig: scale 68 gives
 * about 1 GB); the data directory's real size is measured and printed.
 */
const MB_PER_SCALE = 15;
/** With --data random, pgbench's tables (for the load) stay this small. */
const RANDOM_PGBENCH_SCALE = 10;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MB = 1024 * 1024;

export interface Options {
  /** pgbench: pgbench -i at the scale giving sizeMb (its rows compress very well); random: a small pgbench scale for the load plus a table of random bytes up to sizeMb. */
  data: "pgbench" | "random";
  sizeMb: number;
  runs: number;
  seconds: number;
  clients: number;
}

export function parseArgs(argv: readonly string[]): Options {
  const opts: Options = { data: "pgbench", sizeMb: 1024, runs: 3, seconds: 30, clients: 4 };
  const limits: Record<string, [Exclude<keyof Options, "data">, number, number]> = {
    "--size-mb": ["sizeMb", 16, 64 * 1024],
    "--runs": ["runs", 1, 20],
    "--seconds": ["seconds", 1, 600],
    "--clients": ["clients", 1, 32],
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--data") {
      const d = argv[++i];
      if (d !== "pgbench" && d !== "random") throw new Error("--data needs pgbench or random");
      opts.data = d;
      continue;
    }
    if (flag === "--help" || flag === "-h") {
      process.stdout.write(
        "usage: npm run bench:backup -- [--data pgbench|random] [--size-mb N] [--runs N] [--seconds N] [--clients N]\n" +
          "  --data D      pgbench: pgbench -i alone (compresses to a few %); random: pgbench -i -s 10 plus random bytes (default pgbench)\n" +
          "  --size-mb N   database size to fill (default 1024)\n" +
          "  --runs N      full backups and raw copies, alternating (default 3)\n" +
          "  --seconds N   pgbench load while archive lag is sampled; its WAL is what the restore replays (default 30)\n" +
          "  --clients N   pgbench clients (default 4)\n",
      );
      process.exit(0);
    }
    const spec = limits[flag];
    if (!spec) throw new Error(`unknown argument ${flag} (expected ${Object.keys(limits).join(", ")})`);
    const value = Number(argv[++i]);
    if (!Number.isInteger(value) || value < spec[1] || value > spec[2]) throw new Error(`${flag} needs an integer from ${spec[1]} to ${spec[2]}`);
    opts[spec[0]] = value;
  }
  return opts;
}

/** Nearest-rank percentile (undefined when empty). */
function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function fmt(v: number | undefined, digits = 0): string {
  return v === undefined ? "n/a" : v.toFixed(digits);
}

function spread(values: readonly number[], digits: number, unit: string): string {
  return `min ${fmt(percentile(values, 0), digits)}  median ${fmt(percentile(values, 50), digits)}  max ${fmt(percentile(values, 100), digits)} ${unit} (n=${values.length})`;
}

export interface Summary {
  label: string;
  value: string;
}

/** Everything the bench needs about one host's pgBackRest files. */
interface PgbrHost {
  inv: PgbackrestInvocation;
  configPath: string;
}

interface Rig {
  net: TestNet;
  ca: TestCa;
  cluster: PgCluster;
  s3: S3StandIn;
  secrets: PgbackrestSecrets;
}

function chownPostgres(rig: Rig, path: string): void {
  chownSync(path, rig.cluster.postgresIds.uid, rig.cluster.postgresIds.gid);
}

/**
 * Renders and writes a host's pgbackrest.conf and its conf.d secrets file
 * (0600, postgres) as the deployment does (lib/backup.ts: the renderer's
 * defaults for compression, bundling, process-max and the archive queue),
 * with the rig's S3 CA, spool and lock directories.
 */
function writePgbackrest(rig: Rig, node: PgNode): PgbrHost {
  const dir = join(rig.net.dir, `${node.host.name}-pgbr`);
  const configPath = join(dir, "config");
  const spool = join(dir, "spool");
  // Its own lock directory: pgBackRest's default /tmp/pgbackrest is shared by every namespace.
  const lock = join(dir, "lock");
  for (const d of [dir, configPath, join(configPath, "conf.d"), spool, lock]) {
    mkdirSync(d, { recursive: true, mode: 0o750 });
    chownPostgres(rig, d);
  }
  const s3Ca = join(dir, "s3-ca.crt");
  copyFileSync(rig.ca.certFile, s3Ca);
  chownPostgres(rig, s3Ca);
  const conf = join(configPath, "pgbackrest.conf");
  writeFileSync(
    conf,
    renderPgbackrestConf({
      stanza: STANZA,
      repo: { endpoint: rig.s3.endpoint, bucket: BUCKET, region: REGION, path: REPO_PATH, caFile: s3Ca },
      pg: { dataDir: node.dataDir, socketDir: node.socketDir, port: node.port },
      spoolPath: spool,
      lockPath: lock,
    }),
    { mode: 0o640 },
  );
  chownPostgres(rig, conf);
  const secretFile = join(configPath, "conf.d", "secrets.conf");
  writeFileSync(secretFile, renderPgbackrestSecrets(rig.secrets), { mode: 0o600 });
  chownPostgres(rig, secretFile);
  return { inv: { stanza: STANZA, configPath }, configPath };
}

/**
 * Makes the node render its postgresql.conf with the archiving settings
 * (renderPostgresqlConf's `archive`), with the same parameters the rig's
 * writeConfig uses for a primary.
 */
function renderWithArchiving(node: PgNode, archive: [string, string][]): void {
  const write = node.writeConfig.bind(node);
  node.writeConfig = (role, upstream) => {
    write(role, upstream); // pg_hba.conf, and the conf without archiving
    if (role !== "primary") throw new Error("bench: only the primary archives here");
    const c = node.cluster;
    writeFileSync(
      node.confFile,
      renderPostgresqlConf({
        role: "primary",
        name: node.name,
        dataDir: node.dataDir,
        hbaFile: node.hbaFile,
        listenAddresses: [node.host.ip],
        port: node.port,
        unixSocketDir: node.socketDir,
        tune: c.opts.tune ?? TUNE,
        tls: node.tls,
        maxSlotWalKeepSizeMB: c.opts.maxSlotWalKeepSizeMB ?? 1024,
        walKeepSizeMB: c.opts.walKeepSizeMB ?? 64,
        archive,
      }),
      { mode: 0o644 },
    );
  };
}

async function pgbr(host: Host, argv: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}) {
  return host.exec(argv, { user: "postgres", allowFail: opts.allowFail, timeoutMs: opts.timeoutMs ?? 30 * 60_000 });
}

interface InfoBackup {
  label: string;
  type: string;
  timestamp: { start: number; stop: number };
  info: { size: number; repository: { size: number; delta: number } };
  lsn?: { start: string; stop: string };
}

async function newestBackup(host: Host, inv: PgbackrestInvocation): Promise<InfoBackup> {
  const r = await pgbr(host, infoArgv(inv));
  parsePgbackrestInfo(r.stdout); // checks the shape
  const [stanza] = JSON.parse(r.stdout) as { backup: InfoBackup[] }[];
  const b = stanza?.backup.at(-1);
  if (!b) throw new Error("pgbackrest info lists no backup");
  return b;
}

/** Bytes of the data directory a backup covers: everything but pg_wal's contents (pgBackRest does not copy them; the WAL comes from the archive). */
async function dataDirBytes(host: Host, dataDir: string): Promise<number> {
  const r = await host.exec(["du", "-sb", "--exclude=./pg_wal/*", "."], { cwd: dataDir });
  return Number(r.stdout.split(/\s/)[0]);
}

/** LSN (bytes) at the end of a WAL segment named TTTTTTTTXXXXXXXXYYYYYYYY. */
function segmentEnd(name: string, segBytes: number): number {
  const m = /^[0-9A-F]{8}([0-9A-F]{8})([0-9A-F]{8})$/.exec(name);
  if (!m) throw new Error(`not a WAL segment name: ${name}`);
  return parseInt(m[1]!, 16) * 2 ** 32 + (parseInt(m[2]!, 16) + 1) * segBytes;
}

const lsnBytes = (lsn: string) => Number(lsnToBigInt(lsn));

interface LagSample {
  /** Unix seconds, from the server's clock_timestamp(). */
  t: number;
  lsn: number;
  archivedEnd?: number;
  archivedAt?: number;
  ready: number;
}

/**
 * Samples the archiver every SAMPLE_MS with one psql running `\watch`, so
 * that sampling costs a query, not a process start. pg_stat_archiver names
 * the last segment archive_command reported archived and when
 * (https://www.postgresql.org/docs/15/monitoring-stats.html#MONITORING-PG-STAT-ARCHIVER-VIEW);
 * pg_ls_archive_statusdir() lists pg_wal/archive_status, where a `.ready`
 * file is a complete segment the archiver has not yet archived
 * (https://www.postgresql.org/docs/15/functions-admin.html).
 * With archive-async, the archive_command (pgBackRest's archive-push) starts
 * or finds the async process, which pushes every ready segment with
 * process-max workers, and returns success for its segment only once the
 * async process has written that segment's `.ok` status in the spool, i.e.
 * after storing it in the repository (https://pgbackrest.org/user-guide.html#async-archiving;
 * src/command/archive/push/push.c, cmdArchivePush, at release/2.45). So
 * last_archived_wal is what the repository holds.
 */
class ArchiverSampler {
  private proc?: ChildProcess;
  readonly logFile: string;

  constructor(node: PgNode, dir: string) {
    chmodSync(dir, 0o755); // psql runs as postgres and reads the script from here
    const script = join(dir, "archiver-sample.sql");
    writeFileSync(
      script,
      "SELECT extract(epoch FROM clock_timestamp()), pg_current_wal_lsn(), coalesce(last_archived_wal, ''), coalesce(extract(epoch FROM last_archived_time)::text, ''), " +
        "(SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name ~ '^[0-9A-F]{24}\\.ready$') FROM pg_stat_archiver\n" +
        `\\watch ${SAMPLE_MS / 1000}\n`,
      { mode: 0o644 },
    );
    const psql = join(node.cluster.bin, "psql");
    const { proc, log: logFile } = node.host.spawnDaemon(
      "archiver-sampler",
      [psql, "-X", "-q", "-A", "-t", "-h", node.socketDir, "-p", String(node.port), "-U", "postgres", "-d", "postgres", "-f", script],
      { user: "postgres" },
    );
    this.proc = proc;
    this.logFile = logFile;
  }

  stop(): void {
    const p = this.proc;
    this.proc = undefined;
    if (p?.pid && p.exitCode === null && p.signalCode === null) process.kill(-p.pid, "SIGTERM");
  }

  samples(segBytes: number): LagSample[] {
    const out: LagSample[] = [];
    let archivedEnd: number | undefined;
    for (const line of readFileSync(this.logFile, "utf8").split("\n")) {
      const f = line.split("|");
      if (f.length !== 5 || !/^\d+(\.\d+)?$/.test(f[0]!)) continue;
      // The archiver also archives backup history files (X.<offset>.backup, written by
      // pg_backup_stop after its WAL switch) and timeline history files. It takes the ready file
      // with the lowest name (src/backend/postmaster/pgarch.c, pgarch_readyXlog), so segment X went
      // before X.<offset>.backup: that name says X is archived. A .history file says nothing.
      const seg = /^([0-9A-F]{24})(\.[0-9A-F]{8}\.backup)?$/.exec(f[2]!)?.[1];
      if (seg) archivedEnd = segmentEnd(seg, segBytes);
      out.push({
        t: Number(f[0]),
        lsn: lsnBytes(f[1]!),
        archivedEnd,
        archivedAt: f[3] ? Number(f[3]) : undefined,
        ready: Number(f[4]),
      });
    }
    return out;
  }
}

/** The first time (interpolated between samples) the primary's LSN reached `lsn`; undefined when it had before the first sample. */
function timeReached(samples: readonly LagSample[], lsn: number): number | undefined {
  if (samples.length === 0 || samples[0]!.lsn >= lsn) return undefined;
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    if (b.lsn >= lsn) return a.t + ((b.t - a.t) * (lsn - a.lsn)) / Math.max(1, b.lsn - a.lsn);
  }
  return undefined;
}

/** The rig hosts bench() needs. */
export const HOSTS = ["bkbpg", "bkbrestore", "bkbs3"];

/** Runs the measurements on a rig of HOSTS, adding what it measured to summary. */
export async function bench(opts: Options, net: TestNet, summary: Summary[]): Promise<void> {
  const add = (label: string, value: string) => summary.push({ label, value });
  const [pgHost, restoreHost, s3Host] = ["bkbpg", "bkbrestore", "bkbs3"].map((n) => net.host(n)) as [Host, Host, Host];
  const ca = makeCa("bkb-ca", net.mkdir("ca"));
  const removeHosts = setRigHosts(net, { [S3_NAME]: s3Host.ip });
  try {
    const secrets: PgbackrestSecrets = { cipherPass: randomBytes(36).toString("base64"), s3Key: "BKBRIGACCESSKEY", s3KeySecret: randomBytes(24).toString("base64") };
    const s3 = await S3StandIn.start({ host: s3Host, ca, dnsName: S3_NAME, port: S3_PORT, bucket: BUCKET, accessKey: secrets.s3Key, secretKey: secrets.s3KeySecret });
    const cluster = new PgCluster({ net, ca, dbHosts: [pgHost, restoreHost], appHosts: [], exporterHosts: [], tune: TUNE });
    const rig: Rig = { net, ca, cluster, s3, secrets };
    const primary = cluster.node(pgHost);
    const files = writePgbackrest(rig, primary);
    renderWithArchiving(primary, archiveSettings({ ...files.inv }));
    log(
      `primary with archiving; pgbackrest.conf as rendered: compress ${PGBACKREST_DEFAULTS.compressType} level ${PGBACKREST_DEFAULTS.compressLevel}, ` +
        `aes-256-cbc, bundle, process-max ${PGBACKREST_DEFAULTS.processMax}, archive-async; S3 stand-in at https://${s3.endpoint} (own namespace)`,
    );
    await startPrimaryWithRoles(primary);
    // Archiving is on from the start: until the stanza exists each async archive-push fails, and
    // while one runs it holds the stanza's archive lock, which stanza-create also takes. Retry.
    await waitFor(
      "stanza-create",
      async () => {
        const r = await pgbr(pgHost, stanzaCreateArgv(files.inv), { allowFail: true, timeoutMs: 60_000 });
        if (r.code !== 0 && !/unable to acquire lock/.test(r.stdout)) throw new Error(r.stdout + r.stderr);
        return r.code === 0;
      },
      60_000,
      500,
    );
    const segBytes = Number(await primary.value("SELECT setting::bigint * (CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 WHEN 'MB' THEN 1048576 END) FROM pg_settings WHERE name = 'wal_segment_size'"));

    // 1. Fill the database.
    const scale = opts.data === "pgbench" ? Math.max(1, Math.round(opts.sizeMb / MB_PER_SCALE)) : Math.min(RANDOM_PGBENCH_SCALE, Math.max(1, Math.round(opts.sizeMb / MB_PER_SCALE / 2)));
    const randomMb = opts.data === "random" ? Math.max(0, opts.sizeMb - scale * MB_PER_SCALE) : 0;
    log(`pgbench -i -s ${scale}${randomMb ? ` and ${randomMb} MB of random bytes` : ""} (target ${opts.sizeMb} MB)`);
    await primary.psql(`CREATE DATABASE ${PGBENCH_DB}`);
    const pgbench = join(cluster.bin, "pgbench");
    const pgbenchConn = ["-h", primary.socketDir, "-p", String(primary.port), "-U", "postgres"];
    const fillStart = Date.now();
    await pgHost.exec([pgbench, "-i", "-q", "-s", String(scale), ...pgbenchConn, PGBENCH_DB], { user: "postgres", timeoutMs: 60 * 60_000 });
    if (randomMb > 0) {
      // 512 random bytes per row (32 UUIDv4, 122 random bits each), stored inline: below the TOAST
      // threshold, so neither PostgreSQL nor zstd finds much to compress. About 580 bytes a row on disk.
      const rows = Math.round((randomMb * MB) / 580);
      await primary.psql(
        "CREATE TABLE random_fill (id int PRIMARY KEY, payload bytea NOT NULL); " +
          `INSERT INTO random_fill SELECT g, (SELECT string_agg(uuid_send(gen_random_uuid()), ''::bytea) FROM generate_series(1, 32) WHERE g > 0) FROM generate_series(1, ${rows}) g;`,
        { db: PGBENCH_DB, timeoutMs: 60 * 60_000 },
      );
    }
    await primary.psql("CHECKPOINT");
    const dbBytes = Number(await primary.value(`SELECT pg_database_size('${PGBENCH_DB}')`));
    const dirBytes = await dataDirBytes(pgHost, primary.dataDir);
    log(`filled in ${((Date.now() - fillStart) / 1000).toFixed(0)} s: database ${(dbBytes / MB).toFixed(0)} MiB, data directory without pg_wal ${(dirBytes / MB).toFixed(0)} MiB`);
    add("data", opts.data === "pgbench" ? `pgbench -i -s ${scale}` : `pgbench -i -s ${scale} + ${randomMb} MB of random bytes`);
    add("database size", `${(dbBytes / MB).toFixed(0)} MiB`);
    add("data directory (without pg_wal)", `${(dirBytes / MB).toFixed(0)} MiB`);

    // The source side alone: how fast tar reads the data directory (page cache warm).
    const tarStart = Date.now();
    await pgHost.exec(["bash", "-c", `set -o pipefail; (tar -C ${primary.dataDir} --exclude='./pg_wal/*' --warning=no-file-changed -cf - . || [ $? -eq 1 ]) | wc -c`], { timeoutMs: 30 * 60_000 });
    const tarMbps = dirBytes / MB / ((Date.now() - tarStart) / 1000);
    log(`tar of the data directory to a pipe alone: ${tarMbps.toFixed(0)} MB/s`);
    add("tar to a pipe alone", `${tarMbps.toFixed(0)} MB/s`);

    // 2. Full backups against raw copies to the same endpoint, alternating, page cache warm for both.
    // The raw copy signs its requests as pgBackRest does (the stand-in checks AWS Signature V4), the key in a
    // 0600 curl config file as templates/redis-backup.ts does; the streamed body is sent as UNSIGNED-PAYLOAD.
    const curlCredentials = join(net.mkdir("raw-copy"), "credentials");
    writeFileSync(curlCredentials, renderS3CurlCredentials({ s3Key: secrets.s3Key, s3KeySecret: secrets.s3KeySecret }), { mode: 0o600 });
    const backupSeconds: number[] = [];
    const backupMbps: number[] = [];
    const rawSeconds: number[] = [];
    const rawMbps: number[] = [];
    let last: InfoBackup | undefined;
    for (let run = 1; run <= opts.runs; run++) {
      // Raw: one tar stream of the data directory (pg_wal's contents left out, as pgBackRest does) in
      // one signed HTTPS PUT from the same namespace.
      const rawBytesDir = await dataDirBytes(pgHost, primary.dataDir);
      const key = `raw/copy-${run}.tar`;
      const rawCmd =
        `set -o pipefail; (tar -C ${primary.dataDir} --exclude='./pg_wal/*' --warning=no-file-changed -cf - . || [ $? -eq 1 ]) | ` +
        `curl -sS --fail -o /dev/null -w '%{size_upload}' -H 'Expect:' --aws-sigv4 aws:amz:${REGION}:s3 -K ${curlCredentials} -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --cacert ${ca.certFile} -T - https://${s3.endpoint}/${BUCKET}/${key}`;
      const rawStart = Date.now();
      const raw = await pgHost.exec(["bash", "-c", rawCmd], { timeoutMs: 30 * 60_000 });
      const rawS = (Date.now() - rawStart) / 1000;
      rmSync(join(s3.root, BUCKET, key), { force: true });
      rawSeconds.push(rawS);
      rawMbps.push(rawBytesDir / MB / rawS);
      log(`run ${run}: raw copy (tar | curl PUT) ${rawS.toFixed(1)} s, ${(Number(raw.stdout) / MB).toFixed(0)} MiB sent: ${(rawBytesDir / MB / rawS).toFixed(1)} MB/s of the data directory`);

      const bkStart = Date.now();
      const r = await pgbr(pgHost, backupArgv(files.inv, "full"));
      const bkS = (Date.now() - bkStart) / 1000;
      if (!/backup command end: completed successfully/.test(r.stdout)) throw new Error(`backup failed:\n${r.stdout}${r.stderr}`);
      last = await newestBackup(pgHost, files.inv);
      backupSeconds.push(bkS);
      backupMbps.push(rawBytesDir / MB / bkS);
      log(
        `run ${run}: full backup ${last.label} ${bkS.toFixed(1)} s (pgBackRest's own start-to-stop ${last.timestamp.stop - last.timestamp.start} s): ` +
          `${(rawBytesDir / MB / bkS).toFixed(1)} MB/s of the data directory; pgBackRest size ${(last.info.size / MB).toFixed(0)} MiB, ` +
          `${(last.info.repository.delta / MB).toFixed(0)} MiB stored (compressed, encrypted)`,
      );
    }
    const ratio = (percentile(backupMbps, 50) ?? 0) / (percentile(rawMbps, 50) ?? 1);
    log(`full backup ${spread(backupMbps, 1, "MB/s")}; raw copy ${spread(rawMbps, 1, "MB/s")}; backup/raw (medians) ${ratio.toFixed(2)}`);
    add("full backup time", spread(backupSeconds, 1, "s"));
    add("full backup throughput", spread(backupMbps, 1, "MB/s"));
    add("raw copy time (tar | curl PUT)", spread(rawSeconds, 1, "s"));
    add("raw copy throughput", spread(rawMbps, 1, "MB/s"));
    add("backup / raw throughput (medians)", ratio.toFixed(2));
    add("stored per full backup", `${(last!.info.repository.delta / MB).toFixed(0)} MiB (${((100 * last!.info.repository.delta) / last!.info.size).toFixed(1)} % of ${(last!.info.size / MB).toFixed(0)} MiB)`);

    // 3. Archive lag under pgbench load.
    const sampler = new ArchiverSampler(primary, net.mkdir("sampler"));
    let loadOut = "";
    let lsnLoadStart = "";
    let lsnLoadEnd = "";
    try {
      await sleep(1000);
      log(`load: pgbench -c ${opts.clients} -j 2 -T ${opts.seconds} (TPC-B-like) over the primary's socket; archiver sampled every ${SAMPLE_MS} ms`);
      lsnLoadStart = await primary.value("SELECT pg_current_wal_lsn()");
      const load = await pgHost.exec([pgbench, "-c", String(opts.clients), "-j", "2", "-T", String(opts.seconds), "-n", ...pgbenchConn, PGBENCH_DB], {
        user: "postgres",
        timeoutMs: (opts.seconds + 120) * 1000,
      });
      loadOut = load.stdout;
      lsnLoadEnd = await primary.value("SELECT pg_current_wal_lsn()");
      // Keep sampling until the archive has caught up with the end of the load (whole segments).
      const loadEndSeg = lsnBytes(lsnLoadEnd) - (lsnBytes(lsnLoadEnd) % segBytes);
      await waitFor(
        "the archive to catch up after the load",
        async () => {
          const s = sampler.samples(segBytes).at(-1);
          if (!s) throw new Error(`no archiver samples: ${net.readLog(sampler.logFile).slice(-500)}`);
          return (s.archivedEnd ?? 0) >= loadEndSeg;
        },
        300_000,
        200,
      );
      await sleep(500);
    } finally {
      sampler.stop();
    }
    const all = sampler.samples(segBytes);
    const [failedCount, lastFailed] = (await primary.query("SELECT failed_count, coalesce(last_failed_wal, '-') FROM pg_stat_archiver"))[0]!;
    log(`archiver: ${failedCount} failed attempts since the start (last failed: ${lastFailed})`);
    add("archive_command failures", `${failedCount} since the start (last: ${lastFailed})`);
    const tpsMatch = /tps = ([\d.]+)/.exec(loadOut)?.[1];
    const tps = tpsMatch === undefined ? undefined : Number(tpsMatch).toFixed(0);
    const walBytes = lsnDiff(lsnLoadEnd, lsnLoadStart);
    // The samples taken while the load ran: the primary's LSN past the start and not past the end.
    const loadSamples = all.filter((s) => s.lsn > lsnBytes(lsnLoadStart) && s.lsn <= lsnBytes(lsnLoadEnd));
    const lagBytes: number[] = [];
    const lagSeconds: number[] = [];
    const sinceArchived: number[] = [];
    const ready: number[] = [];
    let undetermined = 0;
    for (const s of loadSamples) {
      if (s.archivedEnd === undefined) continue;
      lagBytes.push(Math.max(0, s.lsn - s.archivedEnd));
      const reached = timeReached(all, s.archivedEnd);
      if (reached === undefined) undetermined++;
      else lagSeconds.push(Math.max(0, s.t - reached));
      if (s.archivedAt !== undefined) sinceArchived.push(s.t - s.archivedAt);
      ready.push(s.ready);
    }
    const loadS = loadSamples.length > 1 ? loadSamples.at(-1)!.t - loadSamples[0]!.t : opts.seconds;
    // Per segment: from when the primary's LSN passed its end (the segment complete) to the first
    // sample that shows it archived (to within one sample interval).
    const segmentDelay: number[] = [];
    let prevEnd = all[0]?.archivedEnd;
    for (const s of all) {
      if (s.archivedEnd === undefined || (prevEnd !== undefined && s.archivedEnd <= prevEnd)) continue;
      for (let e = prevEnd === undefined ? s.archivedEnd : prevEnd + segBytes; e <= s.archivedEnd; e += segBytes) {
        const completed = timeReached(all, e);
        if (completed !== undefined) segmentDelay.push(Math.max(0, s.t - completed));
      }
      prevEnd = s.archivedEnd;
    }
    const lastLoad = loadSamples.at(-1);
    const endSegStart = lsnBytes(lsnLoadEnd) - (lsnBytes(lsnLoadEnd) % segBytes);
    const drain = lastLoad && all.find((s) => s.t >= lastLoad.t && (s.archivedEnd ?? 0) >= endSegStart);
    log(
      `${tps ?? "?"} tps, ${(walBytes / MB).toFixed(0)} MiB of WAL in ${opts.seconds} s (${(walBytes / MB / opts.seconds).toFixed(1)} MiB/s, ` +
        `${(walBytes / segBytes).toFixed(1)} segments of ${segBytes / MB} MiB); ${loadSamples.length} samples under load over ${loadS.toFixed(1)} s`,
    );
    const pct = (v: number[], d: number, u: string) => `p50 ${fmt(percentile(v, 50), d)}  p99 ${fmt(percentile(v, 99), d)}  max ${fmt(percentile(v, 100), d)} ${u}`;
    log(`archive lag, bytes (current LSN - end of last archived segment): ${pct(lagBytes.map((b) => b / MB), 1, "MiB")}`);
    log(`archive lag, seconds (since the primary wrote the end of the last archived segment): ${pct(lagSeconds, 2, "s")} (${undetermined} samples before it could be told)`);
    log(`since last_archived_time: ${pct(sinceArchived, 2, "s")}; complete segments waiting (.ready): ${pct(ready, 0, "")}`);
    log(`per segment, from complete on the primary to archived: ${pct(segmentDelay, 2, "s")} (${segmentDelay.length} segments)`);
    if (drain && lastLoad) log(`every complete segment archived ${(drain.t - lastLoad.t).toFixed(2)} s after the load's last sample`);
    add("load", `pgbench -c ${opts.clients} -j 2, ${opts.seconds} s: ${tps ?? "?"} tps, WAL ${(walBytes / MB / opts.seconds).toFixed(1)} MiB/s`);
    add("archive lag, bytes", pct(lagBytes.map((b) => b / MB), 1, "MiB"));
    add("archive lag, seconds", pct(lagSeconds, 2, "s"));
    add("since last_archived_time", pct(sinceArchived, 2, "s"));
    add("segments waiting (.ready)", pct(ready, 0, ""));
    add("segment complete -> archived", `${pct(segmentDelay, 2, "s")} (${segmentDelay.length} segments)`);
    if (drain && lastLoad) add("archive caught up after the load", `${(drain.t - lastLoad.t).toFixed(2)} s`);

    // 4. Point-in-time restore into a new data directory on another host.
    const db = cluster.roles.appDatabase;
    await primary.psql("CREATE TABLE pitr_marker (id int PRIMARY KEY, v text NOT NULL); INSERT INTO pitr_marker VALUES (1, 'before');", { db });
    // pgBackRest picks the newest backup that stopped before the target, in whole seconds
    // (src/command/restore/restore.c, restoreBackupSet at release/2.45); the load already put
    // seconds between them. The target is strictly between two commits.
    await sleep(1100);
    const [targetTime, targetLsn] = (
      await primary.query("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00', pg_current_wal_lsn()")
    )[0]!;
    await sleep(1100);
    await primary.psql("INSERT INTO pitr_marker VALUES (2, 'after');", { db });
    const seg = await primary.value("SELECT pg_walfile_name(pg_current_wal_lsn())");
    await primary.psql("SELECT pg_switch_wal()");
    await waitFor(`${seg} archived`, async () => (await primary.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")) >= seg, 120_000, 200);
    const replayBytes = last!.lsn ? lsnDiff(targetLsn!, last!.lsn.stop) : undefined;
    log(`target ${targetTime} (LSN ${targetLsn}); WAL to replay from the backup's stop LSN ${last!.lsn?.stop ?? "?"}: ${fmt(replayBytes === undefined ? undefined : replayBytes / MB)} MiB`);

    const target = cluster.node(restoreHost);
    mkdirSync(target.dataDir, { recursive: true, mode: 0o700 });
    chownPostgres(rig, target.dataDir);
    const restoreFiles = writePgbackrest(rig, target);
    target.writeConfig("primary");
    const t0 = Date.now();
    // --archive-mode=off: the restored server must not archive into the repository the primary still
    // archives into (restoreArgv; pgBackRest writes archive_mode=off to postgresql.auto.conf).
    const restore = await pgbr(restoreHost, restoreArgv(restoreFiles.inv, { dataDir: target.dataDir, target: { type: "time", time: targetTime! }, targetAction: "promote", archiveMode: "off" }));
    if (!/restore command end: completed successfully/.test(restore.stdout)) throw new Error(`restore failed:\n${restore.stdout}${restore.stderr}`);
    const t1 = Date.now();
    await target.launch(`exec ${PgNode.asPostgres.join(" ")} ${join(cluster.bin, "postgres")} -D ${target.dataDir} -c config_file=${target.confFile}\n`, 30 * 60_000);
    const t2 = Date.now();
    await waitFor("the restored server to promote", async () => !(await target.isInRecovery()), 30 * 60_000, 50);
    const rows = await target.value("SELECT string_agg(v, ',' ORDER BY id) FROM pitr_marker", db);
    const t3 = Date.now();
    const total = (t3 - t0) / 1000;
    log(
      `restore to ${targetTime}: ${total.toFixed(1)} s until promoted and answering (pgbackrest restore ${((t1 - t0) / 1000).toFixed(1)} s, ` +
        `start to accepting connections ${((t2 - t1) / 1000).toFixed(1)} s, to promoted ${((t3 - t2) / 1000).toFixed(1)} s); marker rows: ${rows} (expected: before)`,
    );
    add("PITR WAL replayed after the backup", `${fmt(replayBytes === undefined ? undefined : replayBytes / MB)} MiB`);
    add("PITR until promoted and answering", `${total.toFixed(1)} s`);
    add("  pgbackrest restore (files)", `${((t1 - t0) / 1000).toFixed(1)} s`);
    add("  start to consistent (accepting reads)", `${((t2 - t1) / 1000).toFixed(1)} s`);
    add("  to promoted", `${((t3 - t2) / 1000).toFixed(1)} s`);
    add("PITR marker rows", `${rows} (before the target only: ${rows === "before" ? "yes" : "NO"})`);
    await target.stop();
  } finally {
    removeHosts();
  }
}

async function mainEntry(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const summary: Summary[] = [];
  const started = Date.now();
  const code = await runOnRig(HOSTS, (net) => bench(opts, net, summary));
  if (code !== 0) return code;
  const rows: Summary[] = [{ label: "CPUs", value: `${cpus().length} (${cpus()[0]?.model.trim() ?? "unknown model"})` }, ...summary, { label: "benchmark wall time", value: `${((Date.now() - started) / 1000).toFixed(0)} s` }];
  const width = Math.max(...rows.map((r) => r.label.length));
  process.stdout.write("\nSummary\n");
  for (const r of rows) process.stdout.write(`  ${r.label.padEnd(width)}  ${r.value}\n`);
  return 0;
}

// Run from the command line; bench/all.ts imports bench() instead.
if (require.main === module) runBench(mainEntry);
