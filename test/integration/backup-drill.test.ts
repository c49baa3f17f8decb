/**
 * The restore drill, on real PostgreSQL 15 and pgBackRest 2.45 (Debian),
 * against the rig's S3 stand-in: a primary archives and takes a full backup,
 * then the backup scheduler script rendered by templates/backup-scheduler.ts
 * (the same text the scheduler container runs) is run with its `drill`
 * argument, as root, exactly as `synaxic-backup-scheduler drill` runs in the
 * container: it restores the newest backup into its scratch directory, starts
 * a throwaway server there, checks that it promoted and answers, and removes
 * it. Then the failures: a wrong cipher pass, too little disk, a corrupt
 * backup, each reported as 0 with its reason and cleaned up.
 *
 * The one difference from the container: the rig has no gosu, so a `gosu`
 * on the script's PATH does what gosu does (switch to the user and exec the
 * command, setpriv), and the drill runs in a memory cgroup limited to the
 * scheduler container's limit (lib/memory.ts) where the machine allows it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { execFile } from "node:child_process";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type TestCa } from "../rig/pki";
import { PgCluster, PgNode, parseMetrics, startPrimaryWithRoles } from "../rig/postgres";
import { S3StandIn } from "../rig/s3";
import { setRigHosts } from "../rig/dns";
import { pgConfString } from "../../templates/postgres-quote";
import { BACKUP_TEXTFILE, renderBackupSchedulerScript, type BackupSchedulerParams } from "../../templates/backup-scheduler";
import {
  archiveSettings,
  backupArgv,
  checkArgv,
  expireArgv,
  infoArgv,
  parsePgbackrestInfo,
  renderPgbackrestConf,
  renderPgbackrestSecrets,
  restoreArgv,
  restoreCommand,
  stanzaCreateArgv,
  verifyArgv,
  type PgbackrestInvocation,
  type PgbackrestSecrets,
} from "../../templates/pgbackrest";
import { memoryBudget } from "../../lib/memory";
import { backupAlertRules, renderBackupAlertRules, DEFAULT_BACKUP_ALERT_THRESHOLDS } from "../../templates/backup-alerts";
import { promtool } from "../rig/prometheus";
import { stringify } from "yaml";
import { sh } from "../../lib/shell";

const STANZA = "synaxic";
const BUCKET = "dr-backups";
const S3_NAME = "s3.dr.test";
const S3_PORT = 9443;

let net: TestNet;
let ca: TestCa;
let cluster: PgCluster;
let pg: PgNode;
let host: Host;
let s3: S3StandIn;
let removeHosts: () => void;
let inv: PgbackrestInvocation;
let spool: string;
const secrets: PgbackrestSecrets = { cipherPass: randomBytes(36).toString("base64"), s3Key: "DRRIGACCESSKEY", s3KeySecret: randomBytes(24).toString("base64") };

/** The scheduler container's memory limit on the smallest host (a 2 GB replica), in MiB. */
const SCHEDULER_LIMIT_MIB = memoryBudget("replica", 2048).limitsMiB.backup!;

function chownPostgres(path: string): void {
  chownSync(path, cluster.postgresIds.uid, cluster.postgresIds.gid);
}

/** pgbackrest.conf and its secrets in configPath, rendered as the deployment renders them. */
function writePgbackrest(configPath: string, sec: PgbackrestSecrets): PgbackrestInvocation {
  const dir = join(net.dir, "pgbr");
  for (const d of [dir, configPath, join(configPath, "conf.d"), join(dir, "spool"), join(dir, "lock")]) {
    mkdirSync(d, { recursive: true, mode: 0o750 });
    chownPostgres(d);
  }
  const s3Ca = join(dir, "s3-ca.crt");
  copyFileSync(ca.certFile, s3Ca);
  chownPostgres(s3Ca);
  const conf = join(configPath, "pgbackrest.conf");
  writeFileSync(
    conf,
    renderPgbackrestConf({
      stanza: STANZA,
      repo: { endpoint: s3.endpoint, bucket: BUCKET, region: "dr-rig-1", path: "/synaxic", caFile: s3Ca, uploadChunkSizeMiB: 1 },
      pg: { dataDir: pg.dataDir, socketDir: pg.socketDir, port: pg.port },
      spoolPath: join(dir, "spool"),
      lockPath: join(dir, "lock"),
    }),
    { mode: 0o640 },
  );
  chownPostgres(conf);
  const secretFile = join(configPath, "conf.d", "secrets.conf");
  writeFileSync(secretFile, renderPgbackrestSecrets(sec), { mode: 0o600 });
  chownPostgres(secretFile);
  return { stanza: STANZA, configPath };
}

async function pgbr(argv: string[]) {
  return host.exec(argv, { user: "postgres", timeoutMs: 120_000 });
}

/** Every object under the stanza's archive: WAL segments and timeline history files. */
function archiveObjects(): string[] {
  return s3
    .objects(`synaxic/archive/${STANZA}/`)
    .map((o) => o.key)
    .sort();
}

function newestWal(): string {
  return archiveObjects()
    .map((k) => /\/([0-9A-F]{24})-[0-9a-f]{40}/.exec(k)?.[1])
    .filter((x): x is string => !!x)
    .sort()
    .at(-1)!;
}

/** The directories a drill's scheduler uses, under the rig's directory. */
function schedulerDirs(name: string) {
  const root = join(net.dir, name);
  const dirs = { root, textfile: join(root, "textfile"), state: join(root, "state"), scratch: join(root, "state", "drill"), bin: join(root, "bin") };
  for (const d of [root, dirs.textfile, dirs.bin]) mkdirSync(d, { recursive: true, mode: 0o755 });
  // gosu USER COMMAND...: become USER and exec COMMAND, as gosu does in the container (no process in between).
  const gosu = join(dirs.bin, "gosu");
  writeFileSync(gosu, `#!/bin/sh\nu="$1"; shift\nHOME=/var/lib/postgresql exec setpriv --reuid="$u" --regid="$u" --init-groups -- "$@"\n`);
  chmodSync(gosu, 0o755);
  return dirs;
}

/** The scheduler script as lib/backup.ts renders it, with the rig's paths and this invocation. */
function renderScheduler(
  dirs: ReturnType<typeof schedulerDirs>,
  invocation: PgbackrestInvocation,
  drill: Partial<NonNullable<BackupSchedulerParams["drill"]>> = {},
  scheduler: Partial<Pick<BackupSchedulerParams, "acts" | "intervalSeconds" | "schedule">> = {},
): string {
  const scratch = dirs.scratch;
  const script = renderBackupSchedulerScript({
    argv: { full: backupArgv(invocation, "full"), diff: backupArgv(invocation, "diff"), expire: expireArgv(invocation), verify: verifyArgv(invocation), info: infoArgv(invocation) },
    acts: "whenPrimary",
    schedule: { fullWeekday: 0, hourUtc: 3, verifyWeekday: 3 },
    inRecoveryArgv: ["psql", "-X", "-At", "-h", pg.socketDir, `--port=${pg.port}`, "--dbname=postgres", "-c", "SELECT pg_catalog.pg_is_in_recovery()"],
    textfileDir: dirs.textfile,
    stateDir: dirs.state,
    spoolDir: spool,
    hostName: "drpg",
    ...scheduler,
    drill: {
      schedule: { weekday: 6, hourUtc: 5 },
      timeoutSeconds: 600,
      scratchDir: scratch,
      restoreArgv: restoreArgv(invocation, { dataDir: `${scratch}/data`, target: { type: "immediate" }, targetAction: "promote", archiveMode: "off", tablespaceMapAll: `${scratch}/tablespaces` }),
      restoreCommand: restoreCommand(invocation, { dataDir: `${scratch}/data` }),
      database: cluster.roles.appDatabase,
      ...drill,
    },
  });
  const file = join(dirs.root, "synaxic-backup-scheduler");
  writeFileSync(file, script, { mode: 0o755 });
  return file;
}

/** This process's memory cgroup (v1), where a child cgroup with a limit can be made; null when the machine has none. */
function memoryCgroupRoot(): string | null {
  const line = readFileSync("/proc/self/cgroup", "utf8").split("\n").find((l) => /^\d+:memory:/.test(l));
  if (!line) return null;
  const dir = join("/sys/fs/cgroup/memory", line.slice(line.indexOf(":memory:") + ":memory:".length));
  return existsSync(join(dir, "memory.limit_in_bytes")) ? dir : null;
}

interface DrillRun {
  code: number;
  /** The textfile as the scheduler wrote it. */
  text: string;
  log: string;
  seconds: number;
  metrics: ReturnType<typeof parseMetrics>;
  /** maxUsage counts the page cache too; peakResident is the largest rss + shmem seen (sampled), what cannot be reclaimed. */
  memory?: { maxUsageMiB: number; peakResidentMiB: number; failcnt: number; oomKills: number };
}

/** Runs `synaxic-backup-scheduler drill` as root on the host, in a memory cgroup limited like the scheduler container when possible. */
async function runDrill(dirs: ReturnType<typeof schedulerDirs>, script: string, opts: { whileRunning?: (pid: number) => Promise<void>; loop?: boolean } = {}): Promise<DrillRun> {
  const cgRoot = memoryCgroupRoot();
  const cg = cgRoot ? join(cgRoot, `synaxic-drill-${process.pid}-${Date.now()}`) : null;
  if (cg) {
    mkdirSync(cg);
    writeFileSync(join(cg, "memory.limit_in_bytes"), String(SCHEDULER_LIMIT_MIB * 1024 * 1024));
    // No swap, like the container (lib/containers.ts withoutSwap), where the machine accounts for it.
    if (existsSync(join(cg, "memory.memsw.limit_in_bytes"))) writeFileSync(join(cg, "memory.memsw.limit_in_bytes"), String(SCHEDULER_LIMIT_MIB * 1024 * 1024));
  }
  const t = Date.now();
  // Into the cgroup first (`ip netns exec` mounts a sysfs of its own, without the cgroup tree), then into the host's namespace.
  const enter = cg ? `echo $$ > ${sh([join(cg, "cgroup.procs")])} && ` : "";
  const drill = `PATH=${sh([`${dirs.bin}:${process.env.PATH ?? "/usr/bin:/bin"}`])} exec bash ${sh([script, ...(opts.loop ? [] : ["drill"])])}`;
  let peakResident = 0;
  const sampler = cg
    ? setInterval(() => {
        try {
          const stat = readFileSync(join(cg, "memory.stat"), "utf8");
          const v = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, "m").exec(stat)?.[1] ?? 0);
          peakResident = Math.max(peakResident, v("rss") + v("shmem"));
        } catch {
          /* removed */
        }
      }, 100)
    : undefined;
  let child: ReturnType<typeof execFile> | undefined;
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    // Each shell execs the next: the child's pid is the scheduler script's.
    child = execFile("bash", ["-c", `${enter}exec ${sh(["ip", "netns", "exec", host.ns, "bash", "-c", drill])}`], { timeout: 700_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    );
    if (opts.whileRunning) void opts.whileRunning(child.pid!);
  });
  if (sampler) clearInterval(sampler);
  const seconds = (Date.now() - t) / 1000;
  let memory: DrillRun["memory"];
  if (cg) {
    const oom = readFileSync(join(cg, "memory.oom_control"), "utf8");
    memory = {
      maxUsageMiB: Math.round(Number(readFileSync(join(cg, "memory.max_usage_in_bytes"), "utf8")) / 1048576),
      peakResidentMiB: Math.round(peakResident / 1048576),
      failcnt: Number(readFileSync(join(cg, "memory.failcnt"), "utf8")),
      oomKills: Number(/oom_kill (\d+)/.exec(oom)?.[1] ?? 0),
    };
    await waitFor("the drill's cgroup to empty", async () => readFileSync(join(cg, "cgroup.procs"), "utf8").trim() === "", 30_000, 200);
    rmdirSync(cg);
  }
  const textfile = join(dirs.textfile, BACKUP_TEXTFILE);
  const text = existsSync(textfile) ? readFileSync(textfile, "utf8") : "";
  return { code: r.code, text, log: r.stdout + r.stderr, seconds, metrics: parseMetrics(text), memory };
}

function metric(run: DrillRun, name: string, labels: Record<string, string> = {}) {
  return run.metrics.filter((m) => m.name === name && Object.entries(labels).every(([k, v]) => m.labels[k] === v));
}

/** Processes whose command line names the directory (a throwaway server, a restore) on this machine. */
async function processesUsing(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
      if (cmd.includes(dir)) out.push(`${pid}: ${cmd}`);
    } catch {
      /* gone */
    }
  }
  return out;
}

/** The scratch directory is gone and nothing runs from it. */
async function expectCleanedUp(scratch: string): Promise<void> {
  expect(existsSync(scratch)).toBe(false);
  expect(await processesUsing(scratch)).toEqual([]);
}

beforeAll(async () => {
  net = await TestNet.create(["drpg", "drs3"]);
  ca = makeCa("dr-ca");
  const [h, hs3] = ["drpg", "drs3"].map((n) => net.host(n));
  host = h!;
  removeHosts = setRigHosts(net, { [S3_NAME]: hs3!.ip });
  s3 = await S3StandIn.start({ host: hs3!, ca, dnsName: S3_NAME, port: S3_PORT, bucket: BUCKET, accessKey: secrets.s3Key, secretKey: secrets.s3KeySecret });
  // 1 MiB WAL segments, as in the pgBackRest scenario.
  cluster = new PgCluster({ net, ca, dbHosts: [host], appHosts: [], exporterHosts: [], initdbArgs: ["--wal-segsize=1"] });
  pg = cluster.node(host);
  inv = writePgbackrest(join(net.dir, "pgbr", "config"), secrets);
  spool = join(net.dir, "pgbr", "spool");
  // Archiving as the fleet renders it, but without archive_timeout: an idle primary then writes no new segment, so
  // that any WAL reaching the repository during a drill could only come from the drill.
  const write = pg.writeConfig.bind(pg);
  pg.writeConfig = (role, upstream) => {
    write(role, upstream);
    const settings = archiveSettings({ ...inv, archiveTimeoutSeconds: 0 });
    writeFileSync(pg.confFile, `${readFileSync(pg.confFile, "utf8")}\n${settings.map(([k, v]) => `${k} = ${k === "archive_mode" ? v : pgConfString(v)}`).join("\n")}\n`);
  };
  await startPrimaryWithRoles(pg);
  await waitFor("stanza-create", async () => {
    const r = await host.exec(stanzaCreateArgv(inv), { user: "postgres", allowFail: true, timeoutMs: 60_000 });
    if (r.code !== 0 && !/unable to acquire lock/.test(r.stdout)) throw new Error(r.stdout + r.stderr);
    return r.code === 0;
  }, 30_000, 500);
  expect((await pgbr(checkArgv(inv))).code).toBe(0);
  const db = cluster.roles.appDatabase;
  await pg.psql("CREATE TABLE drill_proof AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 20000) g; CREATE TABLE drill_other (id int PRIMARY KEY);", { db });
  expect((await pgbr(backupArgv(inv, "full"))).stdout).toMatch(/backup command end: completed successfully/);
  // Then a differential, as on a Saturday: the drill restores it (and the full it rests on), with a table only it holds.
  await pg.psql("CREATE TABLE drill_after_full AS SELECT g AS id FROM generate_series(1, 1000) g; UPDATE drill_proof SET v = 'changed' WHERE id <= 5000;", { db });
  expect((await pgbr(backupArgv(inv, "diff"))).stdout).toMatch(/backup command end: completed successfully/);
});

afterAll(async () => {
  await net?.destroy();
  removeHosts?.();
});

const runs: Record<"ok" | "corrupt", DrillRun | undefined> = { ok: undefined, corrupt: undefined };

describe("the restore drill (synaxic-backup-scheduler drill)", () => {
  let label: string;

  it("restores the newest backup into its scratch directory, promotes a throwaway server that answers, reports 1, and leaves nothing behind: no server, no directory, no WAL in the repository", async () => {
    const info = parsePgbackrestInfo((await pgbr(infoArgv(inv))).stdout)[0]!;
    expect(info.backup.map((b) => b.type)).toEqual(["full", "diff"]);
    label = info.backup.at(-1)!.label;
    // Wait until the async archiver has pushed what the backup produced, then take the archive's picture.
    await waitFor("the archive to settle", async () => {
      const before = archiveObjects().length;
      await new Promise((r) => setTimeout(r, 3000));
      return archiveObjects().length === before && readdirSync(join(pg.dataDir, "pg_wal", "archive_status")).every((f) => !f.endsWith(".ready"));
    }, 60_000, 0);
    const archiveBefore = archiveObjects();
    const newestBefore = newestWal();

    const dirs = schedulerDirs("sched-ok");
    const run = await runDrill(dirs, renderScheduler(dirs, inv));
    runs.ok = run;
    console.log(`[drill] ${run.log.split("\n").filter((l) => l.includes("drill")).join("\n[drill] ")}`);
    expect(run.code, run.log).toBe(0);
    expect(run.log).toContain(`drill: restoring backup ${label}`);
    // The newest backup is the differential; the throwaway server promoted (pg_is_in_recovery() false) and answered in
    // the fleet's database with its three tables, one of them only in the differential.
    expect(label).toMatch(/^\d{8}-\d{6}F_\d{8}-\d{6}D$/);
    expect(run.log).toMatch(new RegExp(`drill: backup ${label} restored and promoted; database ${cluster.roles.appDatabase}: 3 tables`));
    expect(metric(run, "synaxic_backup_last_result_success", { operation: "drill" }).map((m) => m.value)).toEqual([1]);
    const started = metric(run, "synaxic_backup_last_start_timestamp_seconds", { operation: "drill" })[0]!.value;
    expect(Math.abs(started - Date.now() / 1000)).toBeLessThan(run.seconds + 60);
    expect(metric(run, "synaxic_backup_last_duration_seconds", { operation: "drill" })[0]!.value).toBeLessThanOrEqual(Math.ceil(run.seconds));
    expect(metric(run, "synaxic_backup_drill_backup_timestamp_seconds", { label }).map((m) => m.value)).toEqual([info.backup.at(-1)!.timestamp.stop]);
    expect(metric(run, "synaxic_backup_drill_database_bytes")[0]!.value).toBeGreaterThan(1_000_000);
    expect(metric(run, "synaxic_backup_drill_failure_info")).toEqual([]);
    await expectCleanedUp(dirs.scratch);
    // The repository received nothing: the same objects, the same newest segment, and no history file of the
    // timeline the throwaway server's promotion started.
    expect(archiveObjects()).toEqual(archiveBefore);
    expect(newestWal()).toBe(newestBefore);
    expect(archiveObjects().filter((k) => k.endsWith(".history"))).toEqual([]);
    // The fleet's own server went on as before.
    expect(await pg.isInRecovery()).toBe(false);
    if (run.memory) {
      // Within the scheduler container's limit: no OOM kill.
      expect(run.memory.oomKills).toBe(0);
      console.log(
        `[drill] memory cgroup limited to ${SCHEDULER_LIMIT_MIB} MiB: peak usage ${run.memory.maxUsageMiB} MiB (page cache included), peak rss + shmem ${run.memory.peakResidentMiB} MiB (sampled every 100 ms), limit hit ${run.memory.failcnt} times, no OOM kill`,
      );
    } else console.log("[drill] no memory cgroup on this machine: memory not measured");
    console.log(`[drill] drill of ${label} (${Math.round(info.backup.at(-1)!.info.size / 1048576)} MiB database) took ${run.seconds.toFixed(1)} s; newest WAL ${newestBefore} unchanged`);
  });

  it("a wrong cipher pass: reported as 0 (reason info) and nothing left behind", async () => {
    const dirs = schedulerDirs("sched-wrong-key");
    const wrong = writePgbackrest(join(net.dir, "pgbr", "wrong-key"), { ...secrets, cipherPass: randomBytes(36).toString("base64") });
    const run = await runDrill(dirs, renderScheduler(dirs, wrong));
    console.log(`[drill] wrong cipher pass: ${/drill: FAILED \(info\): [^\n]*/.exec(run.log)?.[0]}`);
    expect(run.code).not.toBe(0);
    expect(run.log).toMatch(/drill: FAILED \(info\): pgbackrest info/);
    expect(metric(run, "synaxic_backup_last_result_success", { operation: "drill" }).map((m) => m.value)).toEqual([0]);
    expect(metric(run, "synaxic_backup_drill_failure_info").map((m) => m.labels.reason)).toEqual(["info"]);
    expect(run.log).not.toContain(secrets.cipherPass);
    await expectCleanedUp(dirs.scratch);
  });

  it("too little free disk for the backup: refused before restoring, reported as 0 (reason no-space)", async () => {
    const dirs = schedulerDirs("sched-no-space");
    // A margin larger than any disk here: the free space is below what the backup needs.
    const run = await runDrill(dirs, renderScheduler(dirs, inv, { marginMiB: 1024 * 1024 }));
    console.log(`[drill] too little disk: ${/drill: FAILED \(no-space\): [^\n]*/.exec(run.log)?.[0]}`);
    expect(run.code).not.toBe(0);
    expect(run.log).toMatch(new RegExp(`drill: FAILED \\(no-space\\): restoring backup ${label} needs \\d+ MiB free next to .*, there are \\d+ MiB`));
    expect(run.log).not.toContain("drill: restoring backup");
    expect(metric(run, "synaxic_backup_drill_failure_info").map((m) => m.labels.reason)).toEqual(["no-space"]);
    await expectCleanedUp(dirs.scratch);
  });

  it("stopped mid-drill (the container stopped: SIGTERM to the scheduler): the throwaway server is stopped and the scratch directory removed before it exits", async () => {
    const dirs = schedulerDirs("sched-stopped");
    const run = await runDrill(dirs, renderScheduler(dirs, inv), {
      whileRunning: async (pid) => {
        // Once the throwaway server has started on the restored data.
        await waitFor("the throwaway server to start", async () => existsSync(join(dirs.scratch, "data", "postmaster.pid")), 120_000, 50);
        expect((await processesUsing(dirs.scratch)).some((p) => p.includes("postgres -D"))).toBe(true);
        process.kill(pid, "SIGTERM");
      },
    });
    expect(run.log).toContain("stopping");
    await expectCleanedUp(dirs.scratch);
  });

  it("the scheduler's loop runs it on its weekday from its hour, once, on the host that takes the backups; a scheduler that takes none never does", async () => {
    const now = new Date();
    const due = { weekday: now.getUTCDay(), hourUtc: 0 };
    // Backups at another hour, so that the loop's pass only has the drill to do.
    const schedule = { fullWeekday: 0, hourUtc: (now.getUTCHours() + 12) % 24, verifyWeekday: 3 };
    const textfile = (dirs: ReturnType<typeof schedulerDirs>) => (existsSync(join(dirs.textfile, BACKUP_TEXTFILE)) ? parseMetrics(readFileSync(join(dirs.textfile, BACKUP_TEXTFILE), "utf8")) : []);

    const acting = schedulerDirs("sched-loop");
    const run = await runDrill(acting, renderScheduler(acting, inv, { schedule: due }, { schedule, intervalSeconds: 1 }), {
      loop: true,
      whileRunning: async (pid) => {
        await waitFor("the scheduled drill's result", async () => textfile(acting).some((m) => m.name === "synaxic_backup_last_result_success" && m.labels.operation === "drill"), 180_000, 200);
        // A few more passes: the drill is not run again that day.
        await new Promise((r) => setTimeout(r, 4000));
        process.kill(pid, "SIGTERM");
      },
    });
    expect(metric(run, "synaxic_backup_last_result_success", { operation: "drill" }).map((m) => m.value)).toEqual([1]);
    expect(run.log.match(/drill: starting/g)).toHaveLength(1);
    expect(metric(run, "synaxic_backup_scheduler_active").map((m) => m.value)).toEqual([1]);
    expect(metric(run, "synaxic_backup_drill_armed_timestamp_seconds")).toHaveLength(1);
    expect(run.log).not.toMatch(/backup-(full|diff): starting/);
    await expectCleanedUp(acting.scratch);

    const idle = schedulerDirs("sched-loop-never");
    const never = await runDrill(idle, renderScheduler(idle, inv, { schedule: due }, { schedule, intervalSeconds: 1, acts: "never" }), {
      loop: true,
      whileRunning: async (pid) => {
        await waitFor("a few passes", async () => textfile(idle).some((m) => m.name === "synaxic_backup_scheduler_heartbeat_timestamp_seconds"), 60_000, 200);
        await new Promise((r) => setTimeout(r, 4000));
        process.kill(pid, "SIGTERM");
      },
    });
    expect(never.log).not.toContain("drill: starting");
    expect(metric(never, "synaxic_backup_last_result_success", { operation: "drill" })).toEqual([]);
    expect(metric(never, "synaxic_backup_drill_armed_timestamp_seconds")).toEqual([]);
    expect(metric(never, "synaxic_backup_scheduler_active").map((m) => m.value)).toEqual([0]);
  });

  it("a corrupt backup: the restore fails, reported as 0 (reason restore), and the half-restored scratch directory is removed", async () => {
    // Damage the largest file of the backup in the store (encrypted, so any change breaks it).
    const objects = s3.objects(`synaxic/backup/${STANZA}/${label}/`).filter((o) => !o.key.includes("backup.manifest"));
    const victim = objects.sort((a, b) => b.size - a.size)[0]!;
    const path = join(s3.root, BUCKET, victim.key);
    const bytes = readFileSync(path);
    for (let i = Math.floor(bytes.length / 2); i < Math.floor(bytes.length / 2) + 64; i++) bytes[i] = bytes[i]! ^ 0xff;
    writeFileSync(path, bytes);
    expect(statSync(path).size).toBe(victim.size);

    const dirs = schedulerDirs("sched-corrupt");
    const run = await runDrill(dirs, renderScheduler(dirs, inv));
    runs.corrupt = run;
    console.log(`[drill] corrupt backup: ${run.log.split("\n").filter((l) => /drill: .*(FAILED|ERROR)/.test(l)).join(" | ")}`);
    expect(run.code).not.toBe(0);
    expect(run.log).toMatch(/drill: FAILED \(restore\): pgbackrest restore exited with \d+/);
    expect(run.log).not.toContain("restored and promoted");
    expect(metric(run, "synaxic_backup_last_result_success", { operation: "drill" }).map((m) => m.value)).toEqual([0]);
    expect(metric(run, "synaxic_backup_drill_failure_info").map((m) => m.labels.reason)).toEqual(["restore"]);
    await expectCleanedUp(dirs.scratch);
  });
});

describe("the drill's textfile and alert rules, on what the drills above wrote", () => {
  const node = { job: "node", instance: "10.10.0.2:9100", host: "drpg" };
  const rules = Object.fromEntries(backupAlertRules().map((r) => [r.alert, r]));

  it("the textfile is valid exposition format (promtool check metrics)", async () => {
    for (const run of [runs.ok!, runs.corrupt!]) {
      const r = await promtool(["check", "metrics"], { input: run.text });
      expect(r.stdout + r.stderr).not.toMatch(/error|parse/i);
    }
  });

  /** promtool test rules over the rendered rules file; each case: input series (name{labels} -> values), and the alerts expected at evalTime. */
  async function testRules(cases: { series: [string, string][]; evalTime: string; alert: string; exp: { labels: Record<string, string>; annotations: Record<string, string> }[] }[], interval = "1m") {
    const dir = join(net.dir, `promtool-${Date.now()}`);
    mkdirSync(dir);
    writeFileSync(join(dir, "backup.yml"), renderBackupAlertRules());
    const tests = cases.map((c) => ({
      interval,
      input_series: c.series.map(([series, values]) => ({ series, values })),
      alert_rule_test: [{ eval_time: c.evalTime, alertname: c.alert, exp_alerts: c.exp.map((e) => ({ exp_labels: e.labels, exp_annotations: e.annotations })) }],
    }));
    writeFileSync(join(dir, "test.yml"), stringify({ rule_files: ["backup.yml"], evaluation_interval: interval, tests }));
    const r = await promtool(["test", "rules", "test.yml"], { cwd: dir });
    expect(r.code, r.stdout + r.stderr).toBe(0);
  }

  const series = (run: DrillRun, name: string) =>
    run.metrics.filter((m) => m.name === name).map((m): [string, string] => [`${name}{${Object.entries({ ...node, ...m.labels }).map(([k, v]) => `${k}="${v}"`).join(",")}}`, `${m.value}x30`]);

  it("the corrupt backup's drill fires SynaxicBackupDrillFailed with reason restore, and not the generic SynaxicBackupFailed", async () => {
    const run = runs.corrupt!;
    const input = [...series(run, "synaxic_backup_drill_failure_info"), ...series(run, "synaxic_backup_last_result_success")];
    const r = rules.SynaxicBackupDrillFailed!;
    const labels = { ...node, reason: "restore", severity: "critical" };
    const fill = (t: string) => t.replace(/\{\{ \$labels\.([a-z]+) \}\}/g, (_, k: string) => (labels as Record<string, string>)[k] ?? "");
    await testRules([
      { series: input, evalTime: "10m", alert: "SynaxicBackupDrillFailed", exp: [{ labels, annotations: { summary: fill(r.annotations.summary), description: fill(r.annotations.description) } }] },
      { series: input, evalTime: "10m", alert: "SynaxicBackupFailed", exp: [] },
    ]);
    // The successful drill's metrics fire neither.
    const ok = [...series(runs.ok!, "synaxic_backup_drill_failure_info"), ...series(runs.ok!, "synaxic_backup_last_result_success")];
    await testRules([{ series: ok, evalTime: "10m", alert: "SynaxicBackupDrillFailed", exp: [] }]);
  });

  it("SynaxicBackupDrillTooOld: past the age after the last success, or after drills became due without one; quiet with drills off", async () => {
    const days = DEFAULT_BACKUP_ALERT_THRESHOLDS.drillMaxAgeDays;
    const r = rules.SynaxicBackupDrillTooOld!;
    const exp = [{ labels: { severity: "warning" }, annotations: { summary: r.annotations.summary, description: r.annotations.description } }];
    const lastOk = `synaxic_backup_last_success_timestamp_seconds{job="node",instance="10.10.0.2:9100",host="drpg",operation="drill"}`;
    const armed = `synaxic_backup_drill_armed_timestamp_seconds{job="node",instance="10.10.0.2:9100",host="drpg"}`;
    const hours = days * 24 + 4;
    // Samples every 5 minutes (a series is seen for 5 minutes after its sample), as many as the hours take.
    const n = hours * 12;
    await testRules([
      // A success at time 0, none since: fires once the age (plus its 1h for) is past, not before.
      { series: [[lastOk, `0x${n}`]], evalTime: `${hours}h`, alert: "SynaxicBackupDrillTooOld", exp },
      { series: [[lastOk, `0x${n}`]], evalTime: `${days * 24 - 1}h`, alert: "SynaxicBackupDrillTooOld", exp: [] },
      // Due since time 0, never succeeded: the same.
      { series: [[armed, `0x${n}`]], evalTime: `${hours}h`, alert: "SynaxicBackupDrillTooOld", exp },
      // Due long ago, but a drill succeeded a day ago (86400 s before the evaluation): quiet.
      { series: [[armed, `0x${n}`], [lastOk, `${(hours - 24) * 3600}x${n}`]], evalTime: `${hours}h`, alert: "SynaxicBackupDrillTooOld", exp: [] },
      // Drills off: no drill series at all, no alert.
      { series: [[`synaxic_backup_scheduler_heartbeat_timestamp_seconds{job="node",instance="10.10.0.2:9100",host="drpg"}`, `0x${n}`]], evalTime: `${hours}h`, alert: "SynaxicBackupDrillTooOld", exp: [] },
    ], "5m");
  });
});
