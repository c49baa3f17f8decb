/**
 * Backups and point-in-time recovery with the rendered pgBackRest files, on
 * real PostgreSQL 15 and pgBackRest 2.45 (Debian), into the rig's S3 stand-in
 * (its own namespace, HTTPS verified by DNS name against the rig CA).
 *
 * One cluster walks through the life of a fleet: stanza-create and a full
 * backup on the primary; a restore to a recorded time into a new data
 * directory; a wrong cipher pass; a standby taking backups through the
 * primary's pgBackRest TLS server; expiry; a promotion after which the new
 * timeline archives into the same stanza; the textfile metrics from real
 * `info` output; and the bounded async archive queue while the object
 * storage is down.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendFileSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type TestCa } from "../rig/pki";
import { PgCluster, PgNode, parseMetrics, startPrimaryWithRoles } from "../rig/postgres";
import { S3StandIn } from "../rig/s3";
import { setRigHosts } from "../rig/dns";
import { pgConfString } from "../../templates/postgres-quote";
import { renderPromoteSql } from "../../templates/postgres";
import {
  archiveSettings,
  backupArgv,
  checkArgv,
  expireArgv,
  infoArgv,
  parsePgbackrestInfo,
  renderPgbackrestConf,
  renderPgbackrestMetrics,
  renderPgbackrestSecrets,
  restoreArgv,
  serverArgv,
  stanzaCreateArgv,
  verifyArgv,
  type PgbackrestConfParams,
  type PgbackrestInfoStanza,
  type PgbackrestInvocation,
  type PgbackrestSecrets,
} from "../../templates/pgbackrest";

const STANZA = "synaxic";
const BUCKET = "bk-backups";
const S3_NAME = "s3.bk.test";
const S3_PORT = 9443;
const TLS_PORT = 8432;
const DNS = { pg1: "bkpg1.bk.test", pg2: "bkpg2.bk.test" };

let net: TestNet;
let ca: TestCa;
let cluster: PgCluster;
let pg1: PgNode;
let pg2: PgNode;
let restoreHost: Host;
let s3: S3StandIn;
let removeHosts: () => void;
const secrets: PgbackrestSecrets = {
  cipherPass: randomBytes(36).toString("base64"),
  s3Key: "BKRIGACCESSKEY",
  s3KeySecret: randomBytes(24).toString("base64"),
};
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface PgbrFiles {
  configPath: string;
  spool: string;
  inv: PgbackrestInvocation;
}

/** Per-host pgBackRest directory: config, conf.d secrets (0600 postgres), TLS files, spool and lock. */
function pgbrDir(host: Host): { dir: string; tls: { ca: string; cert: string; key: string } } {
  const dir = join(net.dir, `${host.name}-pgbr`);
  return { dir, tls: { ca: join(dir, "tls", "ca.crt"), cert: join(dir, "tls", "pgbackrest.crt"), key: join(dir, "tls", "pgbackrest.key") } };
}

function chownPostgres(path: string): void {
  chownSync(path, cluster.postgresIds.uid, cluster.postgresIds.gid);
}

/** Renders and writes this host's pgbackrest.conf and secrets, as the deployment would. */
function writePgbackrest(node: PgNode, extra: Partial<PgbackrestConfParams>, sec: PgbackrestSecrets = secrets, configDir?: string): PgbrFiles {
  const { dir } = pgbrDir(node.host);
  const configPath = configDir ?? join(dir, "config");
  const spool = join(dir, "spool");
  const lock = join(dir, "lock");
  for (const d of [dir, configPath, join(configPath, "conf.d"), spool, lock]) {
    mkdirSync(d, { recursive: true, mode: 0o750 });
    chownPostgres(d);
  }
  // The CA that signed the object storage's certificate, readable by postgres.
  const s3Ca = join(dir, "s3-ca.crt");
  copyFileSync(ca.certFile, s3Ca);
  chownPostgres(s3Ca);
  const params: PgbackrestConfParams = {
    stanza: STANZA,
    repo: { endpoint: s3.endpoint, bucket: BUCKET, region: "bk-rig-1", path: "/synaxic", caFile: s3Ca, retentionFull: 2, retentionDiff: 2, uploadChunkSizeMiB: 1 },
    pg: { dataDir: node.dataDir, socketDir: node.socketDir, port: node.port },
    spoolPath: spool,
    lockPath: lock,
    archivePushQueueMaxMiB: 16,
    ...extra,
  };
  const conf = join(configPath, "pgbackrest.conf");
  writeFileSync(conf, renderPgbackrestConf(params), { mode: 0o640 });
  chownPostgres(conf);
  const secretFile = join(configPath, "conf.d", "secrets.conf");
  writeFileSync(secretFile, renderPgbackrestSecrets(sec), { mode: 0o600 });
  chownPostgres(secretFile);
  return { configPath, spool, inv: { stanza: STANZA, configPath } };
}

/** The host's TLS files: a server certificate (primary) naming its DNS name, usable as a client certificate too (CN = pgbackrest-<host>). */
function writeTls(node: PgNode): void {
  const { dir, tls } = pgbrDir(node.host);
  mkdirSync(join(dir, "tls"), { recursive: true });
  const name = node.name === pg1.name ? DNS.pg1 : DNS.pg2;
  const cert = ca.issue(`pgbr-${node.name}`, [name], `pgbackrest-${node.name}`);
  copyFileSync(ca.certFile, tls.ca);
  copyFileSync(cert.certFile, tls.cert);
  copyFileSync(cert.keyFile, tls.key);
  for (const f of [tls.ca, tls.cert, tls.key]) chownPostgres(f);
  writeFileSync(tls.key, readFileSync(tls.key), { mode: 0o600 });
}

/** Adds the archiving settings to the node's rendered postgresql.conf whenever the rig writes it. */
function withArchiving(node: PgNode, inv: () => PgbackrestInvocation): void {
  const write = node.writeConfig.bind(node);
  node.writeConfig = (role, upstream) => {
    write(role, upstream);
    appendFileSync(
      node.confFile,
      "\n# WAL archiving into the pgBackRest repository\n" +
        archiveSettings({ ...inv(), archiveTimeoutSeconds: 60 })
          .map(([k, v]) => `${k} = ${k === "archive_mode" ? v : pgConfString(v)}`)
          .join("\n") +
        "\n",
    );
  };
}

async function pgbr(host: Host, argv: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}) {
  return host.exec(argv, { user: "postgres", allowFail: opts.allowFail, timeoutMs: opts.timeoutMs ?? 120_000 });
}

/** argv with options inserted before the command word (the last element). */
function withOptions(argv: string[], ...options: string[]): string[] {
  return [...argv.slice(0, -1), ...options, argv[argv.length - 1]!];
}

async function info(host: Host, inv: PgbackrestInvocation): Promise<{ json: string; stanza: PgbackrestInfoStanza }> {
  const r = await pgbr(host, infoArgv(inv));
  const [stanza] = parsePgbackrestInfo(r.stdout);
  return { json: r.stdout, stanza: stanza! };
}

/** WAL segment names stored in the repository (any timeline), without the checksum and extension. */
function storedWal(): string[] {
  return s3
    .objects(`synaxic/archive/${STANZA}/`)
    .map((o) => /\/([0-9A-F]{24})-[0-9a-f]{40}/.exec(o.key)?.[1])
    .filter((x): x is string => !!x)
    .sort();
}

async function switchWalAndWaitArchived(node: PgNode): Promise<string> {
  const seg = await node.value("SELECT pg_walfile_name(pg_current_wal_lsn())");
  await node.psql("SELECT pg_switch_wal()");
  await waitFor(`${seg} in the repository`, async () => storedWal().includes(seg), 60_000, 200);
  return seg;
}

let files1: PgbrFiles;
let files2: PgbrFiles;

beforeAll(async () => {
  net = await TestNet.create(["bkpg1", "bkpg2", "bkrestore", "bks3"]);
  ca = makeCa("bk-ca");
  const [h1, h2, hr, hs3] = ["bkpg1", "bkpg2", "bkrestore", "bks3"].map((n) => net.host(n));
  restoreHost = hr!;
  removeHosts = setRigHosts(net, { [S3_NAME]: hs3!.ip, [DNS.pg1]: h1!.ip, [DNS.pg2]: h2!.ip });
  // Small list pages, so pgBackRest's listings go through continuation tokens.
  s3 = await S3StandIn.start({ host: hs3!, ca, dnsName: S3_NAME, port: S3_PORT, bucket: BUCKET, accessKey: secrets.s3Key, secretKey: secrets.s3KeySecret, pageSize: 5 });
  // 1 MiB WAL segments: more segments per test second, and a queue bound that a few MiB of writes exceed.
  cluster = new PgCluster({ net, ca, dbHosts: [h1!, h2!, hr!], appHosts: [], exporterHosts: [], initdbArgs: ["--wal-segsize=1"] });
  pg1 = cluster.node(h1!);
  pg2 = cluster.node(h2!);
  writeTls(pg1);
  writeTls(pg2);
  files1 = writePgbackrest(pg1, {
    tlsServer: { address: h1!.ip, port: TLS_PORT, caFile: pgbrDir(h1!).tls.ca, certFile: pgbrDir(h1!).tls.cert, keyFile: pgbrDir(h1!).tls.key, authorizedClients: [`pgbackrest-${pg2.name}`] },
  });
  withArchiving(pg1, () => files1.inv);
  withArchiving(pg2, () => files2.inv);
  await startPrimaryWithRoles(pg1);
});

afterAll(async () => {
  await net?.destroy();
  removeHosts?.();
});

describe("pgBackRest backups and point-in-time recovery", () => {
  let fullOnPrimary: string;
  let recordedTime: string;
  let before: { rows: number; md5: string };

  it("creates the stanza, archives WAL and takes an encrypted full backup on the primary", async () => {
    // Archiving is already on: until the stanza exists each async archive-push fails, and while
    // one runs it holds the stanza's archive lock, which stanza-create also takes ([050]). Retry.
    await waitFor("stanza-create", async () => {
      const r = await pgbr(pg1.host, stanzaCreateArgv(files1.inv), { allowFail: true });
      if (r.code !== 0 && !/unable to acquire lock/.test(r.stdout)) throw new Error(r.stdout + r.stderr);
      return r.code === 0;
    }, 30_000, 500);
    // check: a WAL switch reaches the repository through archive_command (async).
    const check = await pgbr(pg1.host, checkArgv(files1.inv));
    expect(check.code).toBe(0);
    await pg1.psql("CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 20000) g;", { db: cluster.roles.appDatabase });
    const backup = await pgbr(pg1.host, backupArgv(files1.inv, "full"));
    expect(backup.stdout).toMatch(/backup command end: completed successfully/);
    const { stanza } = await info(pg1.host, files1.inv);
    expect(stanza.status.code).toBe(0);
    expect(stanza.backup.map((b) => b.type)).toEqual(["full"]);
    fullOnPrimary = stanza.backup[0]!.label;
    // The store really holds the backup, bundled, and nothing in it is readable without the key:
    // no zstd frame magic (compressed before encryption) and no plain manifest text.
    const objects = s3.objects(`synaxic/backup/${STANZA}/${fullOnPrimary}/`);
    expect(objects.some((o) => o.key.endsWith("backup.manifest"))).toBe(true);
    expect(objects.some((o) => /\/bundle\/\d+$/.test(o.key))).toBe(true);
    const zstdMagic = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
    for (const o of s3.objects("synaxic/").slice(0, 200)) {
      const head = readFileSync(join(s3.root, BUCKET, o.key)).subarray(0, 64);
      expect(head.subarray(0, 4).equals(zstdMagic)).toBe(false);
      expect(head.toString("latin1")).not.toMatch(/\[backrest\]|pg_data|backup-label/);
    }
    expect(storedWal().length).toBeGreaterThan(0);
    // Objects past the 1 MiB upload chunk went up as multipart uploads.
    const stats = await s3.stats(pg1.host);
    expect(stats.multipartComplete ?? 0).toBeGreaterThan(0);
    expect(objects.some((o) => o.size > 1024 * 1024)).toBe(true);
    // Every request carried a valid AWS Signature V4 made with the key from the secrets file.
    expect(stats.denied ?? 0).toBe(0);
    console.log(`[bk] S3 requests so far: ${JSON.stringify(stats)}`);
    console.log(`[bk] full backup ${fullOnPrimary}: ${objects.length} objects, ${objects.reduce((t, o) => t + o.size, 0)} bytes in the store (${elapsed()})`);
  });

  it("restores to a recorded time into a new data directory: exactly the rows committed before it", async () => {
    const db = cluster.roles.appDatabase;
    await pg1.psql("CREATE TABLE pitr (id int PRIMARY KEY, v text NOT NULL); INSERT INTO pitr SELECT g, 'before' FROM generate_series(1, 100) g;", { db });
    before = await pg1.tableChecksum("pitr");
    // The recorded time: after the commit above, strictly before every later commit, and in a
    // later second than the backup's end: pgBackRest picks the newest backup whose stop time
    // (whole seconds) is less than the target (src/command/restore/restore.c, restoreBackupSet).
    await sleep(1100);
    recordedTime = await pg1.value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'");
    await sleep(1100);
    await pg1.psql("INSERT INTO pitr SELECT g, 'after' FROM generate_series(101, 150) g; UPDATE pitr SET v = 'updated' WHERE id <= 10; DELETE FROM pitr WHERE id BETWEEN 50 AND 60;", { db });
    const after = await pg1.tableChecksum("pitr");
    expect(after.rows).toBe(139);
    await switchWalAndWaitArchived(pg1);

    // A new data directory on a host that never ran this cluster.
    const target = cluster.node(restoreHost);
    mkdirSync(target.dataDir, { recursive: true, mode: 0o700 });
    chownPostgres(target.dataDir);
    const files = writePgbackrest(target, {});
    const restore = await pgbr(restoreHost, restoreArgv(files.inv, { dataDir: target.dataDir, target: { type: "time", time: recordedTime }, archiveMode: "off" }));
    expect(restore.stdout).toMatch(/restore command end: completed successfully/);
    // pgBackRest chose the backup that ends before the time, and wrote the recovery settings.
    expect(restore.stdout).toContain(fullOnPrimary);
    const autoConf = readFileSync(join(target.dataDir, "postgresql.auto.conf"), "utf8");
    expect(autoConf).toContain(`recovery_target_time = '${recordedTime}'`);
    expect(autoConf).toContain("archive_mode = 'off'");
    expect(existsSync(join(target.dataDir, "recovery.signal"))).toBe(true);

    target.writeConfig("primary");
    await target.launch(`exec ${PgNode.asPostgres.join(" ")} ${join(cluster.bin, "postgres")} -D ${target.dataDir} -c config_file=${target.confFile}\n`, 120_000);
    await waitFor("the restored server to promote", async () => !(await target.isInRecovery()), 60_000, 200);
    expect(await target.tableChecksum("pitr")).toEqual(before);
    expect(await target.value("SELECT count(*) FROM pitr WHERE v <> 'before'", db)).toBe("0");
    // A scratch restore never archives: archive_mode is off on the restored server.
    expect(await target.value("SHOW archive_mode")).toBe("off");
    expect(await target.timeline()).toBe(2);
    await target.stop();
    console.log(`[bk] restored to ${recordedTime}: ${before.rows} rows, none of the 139-row later state (${elapsed()})`);
  });

  it("refuses to read the repository with a wrong cipher pass", async () => {
    const wrongDir = join(pgbrDir(restoreHost).dir, "wrong-key");
    const files = writePgbackrest(cluster.node(restoreHost), {}, { ...secrets, cipherPass: randomBytes(36).toString("base64") }, wrongDir);
    const scratch = join(pgbrDir(restoreHost).dir, "scratch-wrong-key");
    mkdirSync(scratch, { mode: 0o700 });
    chownPostgres(scratch);
    const r = await pgbr(restoreHost, restoreArgv(files.inv, { dataDir: scratch, target: { type: "latest" } }), { allowFail: true });
    expect(r.code).not.toBe(0);
    // Decrypting with the wrong key yields either a padding failure (CryptoError) or garbage the
    // ini parser rejects (FormatError); either way backup.info cannot be read and nothing is restored.
    const output = (r.stdout + r.stderr).replace(/[^\x20-\x7e\n]/g, "?");
    expect(output).toMatch(/unable to load info file '\/synaxic\/backup\/synaxic\/backup\.info'/);
    expect(output).toMatch(/(CryptoError|FormatError): /);
    console.log(`[bk] wrong cipher pass: ${/ERROR: \[\d+\]: [^\n]*/.exec(output)?.[0]} (${/(CryptoError|FormatError): [^\n]{0,40}/.exec(output)?.[0]}...)`);
    expect(existsSync(join(scratch, "PG_VERSION"))).toBe(false);
    // And the right key still reads it.
    expect((await info(restoreHost, files1.inv)).stanza.status.code).toBe(0);

    // A wrong S3 secret: the store refuses the signature (HTTP 403) and pgBackRest says so.
    const deniedBefore = (await s3.stats(restoreHost)).denied ?? 0;
    const wrongS3 = writePgbackrest(cluster.node(restoreHost), {}, { ...secrets, s3KeySecret: randomBytes(24).toString("base64") }, join(pgbrDir(restoreHost).dir, "wrong-s3"));
    const denied = await pgbr(restoreHost, infoArgv(wrongS3.inv), { allowFail: true });
    // info reports it as the stanza's status (code 99), which the metrics carry; the key is redacted.
    expect(denied.stdout + denied.stderr).toMatch(/HTTP request failed with 403 \(Forbidden\)/);
    expect(parsePgbackrestInfo(denied.stdout)[0]!.status.code).toBe(99);
    expect(denied.stdout + denied.stderr).not.toContain(secrets.s3KeySecret);
    expect((await s3.stats(restoreHost)).denied ?? 0).toBeGreaterThan(deniedBefore);
  });

  it("takes a backup on the standby, copying data files from the standby; the primary is reached through pgBackRest's TLS server by DNS name", async () => {
    // The primary's pgBackRest TLS server.
    pg1.host.spawnDaemon("pgbackrest-server", serverArgv({ configPath: files1.configPath }), { user: "postgres" });
    await waitFor("pgBackRest TLS server", async () => (await pg2.host.exec(["bash", "-c", `exec 3<>/dev/tcp/${pg1.host.ip}/${TLS_PORT}`], { allowFail: true })).code === 0, 15_000, 100);
    const { tls } = pgbrDir(pg2.host);
    files2 = writePgbackrest(pg2, {
      standbyBackup: { primaryHost: DNS.pg1, primaryPort: TLS_PORT, primaryDataDir: pg1.dataDir, primarySocketDir: pg1.socketDir, caFile: tls.ca, certFile: tls.cert, keyFile: tls.key },
    });
    await pg2.startReplica("replica", pg1, 120_000);
    await pg1.waitStreaming(pg2);
    await pg1.psql("INSERT INTO pitr SELECT g, 'standby-era' FROM generate_series(1000, 1100) g;", { db: cluster.roles.appDatabase });

    const r = await pgbr(pg2.host, withOptions(backupArgv(files2.inv, "full"), "--log-level-console=detail"), { timeoutMs: 180_000 });
    expect(r.stdout).toMatch(/backup command end: completed successfully/);
    // pgBackRest waits for the standby to replay to the backup start point, then copies from it.
    expect(r.stdout).toMatch(/wait for replay on the standby to reach/);
    const copied = [...r.stdout.matchAll(/backup file (\S+)/g)].map((m) => m[1]!);
    const relation = copied.filter((f) => f.includes("/base/"));
    expect(relation.length).toBeGreaterThan(10);
    // Every relation file came from the standby's own data directory (its local pg1); pgBackRest
    // logs a file copied from a remote server as "host:path" (src/command/backup/backup.c).
    expect(relation.every((f) => f.startsWith(pg2.dataDir + "/"))).toBe(true);
    const fromPrimary = copied.filter((f) => f.startsWith(`${DNS.pg1}:`));
    expect(fromPrimary.filter((f) => f.includes("/base/"))).toEqual([]);
    const { stanza } = await info(pg2.host, files2.inv);
    expect(stanza.backup.filter((b) => b.type === "full")).toHaveLength(2);
    console.log(`[bk] standby backup: ${copied.length} files copied, ${relation.length} relation files, all from ${pg2.name}; ${fromPrimary.length} from the primary (${elapsed()})`);

    // A wrong DNS name is refused by pgBackRest's certificate check (the IP SAN-less certificate names only the DNS name).
    const wrongName = writePgbackrest(pg2, {
      standbyBackup: { primaryHost: DNS.pg2, primaryPort: TLS_PORT, primaryDataDir: pg1.dataDir, caFile: tls.ca, certFile: tls.cert, keyFile: tls.key },
    }, secrets, join(pgbrDir(pg2.host).dir, "wrong-name"));
    // Resolve the wrong name to the primary: only the certificate check can fail.
    writeFileSync(`/etc/netns/${pg2.host.ns}/hosts`, readFileSync(`/etc/netns/${pg2.host.ns}/hosts`, "utf8").replace(`${pg2.host.ip} ${DNS.pg2}`, `${pg1.host.ip} ${DNS.pg2}`));
    const bad = await pgbr(pg2.host, checkArgv(wrongName.inv), { allowFail: true, timeoutMs: 60_000 });
    writeFileSync(`/etc/netns/${pg2.host.ns}/hosts`, readFileSync(`/etc/netns/${pg2.host.ns}/hosts`, "utf8").replace(`${pg1.host.ip} ${DNS.pg2}`, `${pg2.host.ip} ${DNS.pg2}`));
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(new RegExp(`unable to find hostname '${DNS.pg2.replace(/\./g, "\\.")}' in certificate`));
  });

  it("expires the oldest full backup and the WAL only it needed: the files leave the store", async () => {
    const beforeInfo = (await info(pg2.host, files2.inv)).stanza;
    const fulls = beforeInfo.backup.filter((b) => b.type === "full");
    expect(fulls.map((b) => b.label)[0]).toBe(fullOnPrimary);
    const oldestKept = fulls[1]!;
    const walBefore = storedWal();
    const walOnlyOldNeeds = walBefore.filter((w) => w < oldestKept.archive!.start!);
    expect(walOnlyOldNeeds.length).toBeGreaterThan(0);
    expect(s3.objects(`synaxic/backup/${STANZA}/${fullOnPrimary}/`).length).toBeGreaterThan(0);

    // A third full without automatic expiry: nothing goes yet.
    const r = await pgbr(pg2.host, withOptions(backupArgv(files2.inv, "full"), "--no-expire-auto"), { timeoutMs: 180_000 });
    expect(r.code).toBe(0);
    expect(s3.objects(`synaxic/backup/${STANZA}/${fullOnPrimary}/`).length).toBeGreaterThan(0);

    const statsBefore = await s3.stats(pg2.host);
    const expire = await pgbr(pg2.host, expireArgv(files2.inv));
    expect(expire.stdout).toMatch(new RegExp(`expire full backup (set: )?${fullOnPrimary}`));
    // The files are really gone from the store, backup and WAL alike.
    expect(s3.objects(`synaxic/backup/${STANZA}/${fullOnPrimary}/`)).toEqual([]);
    const walAfter = storedWal();
    for (const w of walOnlyOldNeeds) expect(walAfter).not.toContain(w);
    expect(walAfter.length).toBeGreaterThan(0);
    const statsAfter = await s3.stats(pg2.host);
    // The removal went through S3 deletes, and the listings through continuation pages (5 entries each).
    expect((statsAfter.multiDelete ?? 0) + (statsAfter.delete ?? 0)).toBeGreaterThan((statsBefore.multiDelete ?? 0) + (statsBefore.delete ?? 0));
    expect(statsAfter.listContinuation ?? 0).toBeGreaterThan(0);
    const after = (await info(pg2.host, files2.inv)).stanza;
    expect(after.backup.filter((b) => b.type === "full")).toHaveLength(2);
    expect(after.backup.map((b) => b.label)).not.toContain(fullOnPrimary);
    console.log(`[bk] expire removed ${fullOnPrimary} and ${walBefore.filter((w) => !walAfter.includes(w)).length} WAL files (all ${walOnlyOldNeeds.length} older than the kept backups); ${JSON.stringify(statsAfter)} (${elapsed()})`);
  });

  it("after a promotion the new primary archives its new timeline into the same stanza, and backups keep working", async () => {
    const db = cluster.roles.appDatabase;
    await pg1.stop();
    expect((await pg2.psql(renderPromoteSql())).stdout.trim()).toBe("primary");
    await waitFor("pg2 to be primary", async () => !(await pg2.isInRecovery()), 30_000, 100);
    expect(await pg2.timeline()).toBe(2);
    await waitFor("the new timeline's history file in the repository", async () => s3.objects(`synaxic/archive/${STANZA}/15-1/00000002.history`).length === 1, 60_000, 200);
    await pg2.psql("INSERT INTO pitr SELECT g, 'after-promotion' FROM generate_series(2000, 2100) g;", { db });
    const seg = await switchWalAndWaitArchived(pg2);
    expect(seg.startsWith("00000002")).toBe(true);

    // The promoted host now renders the primary's config (no standby section) and backs up locally.
    files2 = writePgbackrest(pg2, {});
    const r = await pgbr(pg2.host, backupArgv(files2.inv, "diff"), { timeoutMs: 180_000 });
    expect(r.stdout).toMatch(/backup command end: completed successfully/);
    const { stanza, json } = await info(pg2.host, files2.inv);
    expect(stanza.backup.at(-1)!.type).toBe("diff");
    // verify reads back every backup file and archived segment and checks its checksum, across both timelines.
    const verify = await pgbr(pg2.host, withOptions(verifyArgv(files2.inv), "--log-level-console=detail"), { timeoutMs: 180_000 });
    expect(verify.stdout).toMatch(/verify command end: completed successfully/);
    expect(verify.stdout).not.toMatch(/invalid|missing/i);
    expect(stanza.archive[0]!.max!.startsWith("00000002")).toBe(true);

    // The textfile metrics from this real output.
    const now = Math.floor(Date.now() / 1000);
    const metrics = parseMetrics(renderPgbackrestMetrics(json, { now, runs: [{ operation: "backup-diff", success: true, finishedAt: now, durationSeconds: 3 }] }));
    const get = (name: string, labels: Record<string, string> = {}) =>
      metrics.filter((m) => m.name === name && Object.entries(labels).every(([k, v]) => m.labels[k] === v)).map((m) => m.value);
    expect(get("pgbackrest_stanza_status_code", { stanza: STANZA })).toEqual([0]);
    expect(get("pgbackrest_backup_count", { type: "full" })).toEqual([2]);
    expect(get("pgbackrest_backup_count", { type: "diff" })).toEqual([1]);
    const diffAge = get("pgbackrest_backup_last_age_seconds", { type: "diff" })[0]!;
    expect(diffAge).toBeGreaterThanOrEqual(0);
    expect(diffAge).toBeLessThan(120);
    expect(get("pgbackrest_archive_max_timeline")).toEqual([2]);
    expect(get("pgbackrest_backup_last_database_bytes", { type: "full" })[0]!).toBeGreaterThan(10_000_000);
    expect(get("pgbackrest_repo_backup_bytes")[0]!).toBeGreaterThan(0);
    expect(get("pgbackrest_run_last_success", { operation: "backup-diff" })).toEqual([1]);
    console.log(`[bk] timeline 2 archived up to ${stanza.archive[0]!.max}; diff backup ${stanza.backup.at(-1)!.label} (${elapsed()})`);
  });

  it("drops the async archive queue past archive-push-queue-max instead of filling the disk while the object storage is down", async () => {
    const db = cluster.roles.appDatabase;
    // Short timeouts, so each failing async run gives up soon and the next one checks the bound.
    files2 = writePgbackrest(pg2, { archiveTimeoutSeconds: 5, ioTimeoutSeconds: 3 });
    const archivedBefore = await pg2.value("SELECT archived_count FROM pg_stat_archiver");
    await s3.kill();
    const logStart = pg2.logLength();
    // About 40 MiB of WAL (1 MiB segments) against a 16 MiB queue bound.
    for (let i = 0; i < 8; i++) {
      await pg2.psql(`INSERT INTO filler SELECT g + ${(i + 1) * 1_000_000}, repeat(md5(g::text), 8) FROM generate_series(1, 15000) g; SELECT pg_switch_wal();`, { db, timeoutMs: 60_000 });
    }
    await waitFor("pgBackRest to drop the queue", async () => /dropped WAL file '[0-9A-F]{24}' because archive queue exceeded 16MB/.test(pg2.log(logStart)), 120_000, 500);
    // PostgreSQL counts the dropped segments as archived, so with the repository still down the
    // queue empties instead of growing: no segment stays waiting, and pg_wal recycles them.
    await waitFor("the archiver to move on", async () => Number(await pg2.value("SELECT archived_count FROM pg_stat_archiver")) > Number(archivedBefore) + 16, 60_000, 500);
    const readyFiles = () => readdirSync(join(pg2.dataDir, "pg_wal", "archive_status")).filter((f) => f.endsWith(".ready"));
    await waitFor("no WAL waiting to be archived", async () => readyFiles().length === 0, 90_000, 500);
    const walFiles = readdirSync(join(pg2.dataDir, "pg_wal")).filter((f) => /^[0-9A-F]{24}$/.test(f));
    const stats = await pg2.query("SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver");
    console.log(`[bk] repository down: queue dropped; pg_stat_archiver ${stats[0]!.join(" ")}; ${walFiles.length} segments in pg_wal (${elapsed()})`);
    const dropped = pg2.log(logStart).match(/dropped WAL file/g)?.length ?? 0;
    expect(dropped).toBeGreaterThan(0);
  });
});
