import { describe, expect, it } from "vitest";
import {
  ARCHIVE_TIMEOUT_SECONDS_DEFAULT,
  PGBACKREST_CONTAINER_PATHS as P,
  PgbackrestTemplateError,
  archiveCommand,
  archiveSettings,
  backupArgv,
  checkArgv,
  expireArgv,
  formatTargetTime,
  infoArgv,
  parsePgbackrestInfo,
  renderPgbackrestConf,
  renderPgbackrestMetrics,
  renderPgbackrestSecrets,
  restoreArgv,
  restoreCommand,
  serverArgv,
  stanzaCreateArgv,
  verifyArgv,
  type PgbackrestConfParams,
} from "../../../templates/pgbackrest";

const repo = { endpoint: "fsn1.your-objectstorage.com", bucket: "synaxic-backups", region: "fsn1", path: "/synaxic", caFile: P.s3CaFile };
const pg = { dataDir: "/var/lib/postgresql/data", socketDir: "/var/run/postgresql" };
const primary: PgbackrestConfParams = {
  stanza: "synaxic",
  repo,
  pg,
  spoolPath: P.spoolPath,
  tlsServer: { address: "0.0.0.0", caFile: P.tlsCaFile, certFile: P.tlsCertFile, keyFile: P.tlsKeyFile, authorizedClients: ["pgbackrest-replica-1", "pgbackrest-replica-2"] },
};
const standby: PgbackrestConfParams = {
  stanza: "synaxic",
  repo: { ...repo, retentionFull: 3, retentionDiff: 7 },
  pg,
  spoolPath: P.spoolPath,
  standbyBackup: {
    primaryHost: "main.db.synaxic.internal",
    primaryDataDir: pg.dataDir,
    primarySocketDir: pg.socketDir,
    caFile: P.tlsCaFile,
    certFile: P.tlsCertFile,
    keyFile: P.tlsKeyFile,
  },
};
const inv = { stanza: "synaxic" };

/** The key=value lines of one ini section. */
function section(conf: string, name: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  let current = "";
  for (const l of conf.split("\n")) {
    if (/^\[.*\]$/.test(l)) current = l.slice(1, -1);
    else if (current === name && l && !l.startsWith("#")) {
      const i = l.indexOf("=");
      m.set(l.slice(0, i), [...(m.get(l.slice(0, i)) ?? []), l.slice(i + 1)]);
    }
  }
  return m;
}

describe("renderPgbackrestConf", () => {
  it("renders the primary's config with the TLS server", () => {
    expect(renderPgbackrestConf(primary)).toMatchSnapshot();
  });

  it("renders a standby's config that takes backups from the standby", () => {
    expect(renderPgbackrestConf(standby)).toMatchSnapshot();
  });

  it("puts the repository, archiving and retention in [global] and the server in the stanza section", () => {
    const conf = renderPgbackrestConf(standby);
    const g = section(conf, "global");
    expect(g.get("repo1-type")).toEqual(["s3"]);
    expect(g.get("repo1-s3-uri-style")).toEqual(["path"]);
    expect(g.get("repo1-cipher-type")).toEqual(["aes-256-cbc"]);
    expect(g.get("repo1-retention-full")).toEqual(["3"]);
    expect(g.get("repo1-retention-diff")).toEqual(["7"]);
    expect(g.get("archive-async")).toEqual(["y"]);
    expect(g.get("archive-push-queue-max")).toEqual(["1024MiB"]);
    expect(g.get("repo1-storage-verify-tls")).toEqual(["y"]);
    expect(g.get("repo1-storage-ca-file")).toEqual([P.s3CaFile]);
    const s = section(conf, "synaxic");
    expect(s.get("pg1-path")).toEqual([pg.dataDir]);
    expect(s.get("backup-standby")).toEqual(["y"]);
    expect(s.get("pg2-host")).toEqual(["main.db.synaxic.internal"]);
    expect(s.get("pg2-host-type")).toEqual(["tls"]);
    expect(s.get("pg2-host-port")).toEqual(["8432"]);
    // No secret ever lands in the main file.
    expect(conf).not.toMatch(/cipher-pass|s3-key/);
  });

  it("authorises each client CN for the stanza once", () => {
    const g = section(renderPgbackrestConf({ ...primary, tlsServer: { ...primary.tlsServer!, authorizedClients: ["a", "b", "a"] } }), "global");
    expect(g.get("tls-server-auth")).toEqual(["a=synaxic", "b=synaxic"]);
  });

  it("renders the queue bound, compression and lock path given", () => {
    const g = section(
      renderPgbackrestConf({ ...primary, archivePushQueueMaxMiB: 64, compressType: "lz4", lockPath: "/run/pgbackrest", processMax: 4, archiveTimeoutSeconds: 30, ioTimeoutSeconds: 20 }),
      "global",
    );
    expect(g.get("archive-timeout")).toEqual(["30"]);
    expect(g.get("io-timeout")).toEqual(["20"]);
    expect(section(renderPgbackrestConf(primary), "global").has("io-timeout")).toBe(false);
    expect(g.get("archive-push-queue-max")).toEqual(["64MiB"]);
    expect(g.get("compress-type")).toEqual(["lz4"]);
    expect(g.get("compress-level")).toEqual(["1"]);
    expect(g.get("lock-path")).toEqual(["/run/pgbackrest"]);
    expect(g.get("process-max")).toEqual(["4"]);
  });

  it.each([
    ["an IP address as the primary host (pgBackRest ignores IP SANs)", { ...standby, standbyBackup: { ...standby.standbyBackup!, primaryHost: "10.0.0.2" } }, /must be a DNS name, not an IP address/],
    ["an IP address as the S3 endpoint", { ...primary, repo: { ...repo, endpoint: "10.0.0.9:9000" } }, /repo.endpoint .* must be a DNS name/],
    ["a scheme in the endpoint", { ...primary, repo: { ...repo, endpoint: "https://s3.example.com" } }, /without a scheme/],
    ["a bad bucket", { ...primary, repo: { ...repo, bucket: "Bad_Bucket" } }, /not a valid S3 bucket name/],
    ["a relative repo path", { ...primary, repo: { ...repo, path: "synaxic" } }, /repo.path .* absolute/],
    ["a bad stanza", { ...primary, stanza: "Syn axic" }, /stanza .* is not valid/],
    ["TLS verification off", { ...primary, repo: { ...repo, verifyTls: false } }, /verifyTls=false/],
    ["a tiny queue bound", { ...primary, archivePushQueueMaxMiB: 1 }, /archivePushQueueMaxMiB must be an integer from 16/],
    ["a zero network timeout", { ...primary, ioTimeoutSeconds: 0 }, /ioTimeoutSeconds must be an integer from 1/],
    ["a zero retention", { ...primary, repo: { ...repo, retentionFull: 0 } }, /retentionFull must be an integer from 1/],
    ["an unknown compression", { ...primary, compressType: "xz" as never }, /compressType "xz"/],
    ["a compression level out of range", { ...primary, compressType: "gz" as const, compressLevel: 12 }, /compressLevel for gz/],
    ["no authorised clients", { ...primary, tlsServer: { ...primary.tlsServer!, authorizedClients: [] } }, /authorizedClients is empty/],
    ["a wildcard client CN", { ...primary, tlsServer: { ...primary.tlsServer!, authorizedClients: ["*"] } }, /wildcards/],
    ["a host name to listen on", { ...primary, tlsServer: { ...primary.tlsServer!, address: "main" } }, /must be an IP address to listen on/],
    ["both TLS server and standby backup", { ...standby, tlsServer: primary.tlsServer }, /cannot both be set/],
    ["a line break in a path", { ...primary, spoolPath: "/var/spool\n[global]" }, /control character/],
  ])("refuses %s", (_what, params, message) => {
    expect(() => renderPgbackrestConf(params as PgbackrestConfParams)).toThrow(PgbackrestTemplateError);
    expect(() => renderPgbackrestConf(params as PgbackrestConfParams)).toThrow(message);
  });
});

describe("renderPgbackrestSecrets", () => {
  const secrets = { cipherPass: "c".repeat(20) + "+/=Zq", s3Key: "AKIAEXAMPLE", s3KeySecret: "s3cr3t/with=signs" };

  it("renders the secrets into [global], values verbatim", () => {
    const text = renderPgbackrestSecrets(secrets);
    expect(text).toMatchSnapshot();
    const g = section(text, "global");
    expect(g.get("repo1-cipher-pass")).toEqual([secrets.cipherPass]);
    expect(g.get("repo1-s3-key-secret")).toEqual([secrets.s3KeySecret]);
  });

  it.each([
    ["an empty key", { ...secrets, s3Key: "" }, /s3Key is empty/],
    ["a short cipher pass", { ...secrets, cipherPass: "short" }, /shorter than 20/],
    ["a line break (it would inject options)", { ...secrets, s3KeySecret: "x\nrepo1-path=/elsewhere" }, /line break/],
    ["surrounding blanks (the ini parser strips them)", { ...secrets, s3KeySecret: " x " }, /starts or ends with a blank/],
  ])("refuses %s", (_what, s, message) => {
    expect(() => renderPgbackrestSecrets(s)).toThrow(message);
  });
});

describe("commands", () => {
  it("builds archive_command and restore_command for postgresql.conf", () => {
    expect(archiveCommand(inv)).toBe("pgbackrest --config-path=/etc/pgbackrest --stanza=synaxic --log-level-console=warn archive-push %p");
    expect(restoreCommand({ ...inv, configPath: "/srv/pg$backrest" })).toBe("pgbackrest '--config-path=/srv/pg$backrest' --stanza=synaxic --log-level-console=warn archive-get %f %p");
    expect(() => archiveCommand({ ...inv, configPath: "/srv/pg backrest" })).toThrow(/contains a blank/);
  });

  it("renders the archiving settings with the default timeout", () => {
    const s = new Map(archiveSettings(inv));
    expect(s.get("archive_mode")).toBe("on");
    expect(s.get("archive_timeout")).toBe(`${ARCHIVE_TIMEOUT_SECONDS_DEFAULT}s`);
    expect(new Map(archiveSettings({ ...inv, archiveTimeoutSeconds: 300 })).get("archive_timeout")).toBe("300s");
    expect(() => archiveSettings({ ...inv, archiveTimeoutSeconds: -1 })).toThrow(/archiveTimeoutSeconds/);
  });

  it("builds the operation argv arrays", () => {
    const b = ["pgbackrest", "--config-path=/etc/pgbackrest", "--stanza=synaxic"];
    expect(stanzaCreateArgv(inv)).toEqual([...b, "stanza-create"]);
    expect(backupArgv(inv, "diff")).toEqual([...b, "--type=diff", "backup"]);
    expect(expireArgv(inv)).toEqual([...b, "expire"]);
    expect(verifyArgv(inv)).toEqual([...b, "verify"]);
    expect(checkArgv(inv)).toEqual([...b, "check"]);
    expect(infoArgv(inv)).toEqual([...b, "--output=json", "info"]);
    expect(serverArgv({})).toEqual(["pgbackrest", "--config-path=/etc/pgbackrest", "server"]);
    expect(() => backupArgv(inv, "weekly" as never)).toThrow(/full, diff or incr/);
  });

  it("builds a point-in-time restore that promotes", () => {
    expect(restoreArgv(inv, { dataDir: "/restore/data", target: { type: "time", time: new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)) } })).toEqual([
      "pgbackrest",
      "--config-path=/etc/pgbackrest",
      "--stanza=synaxic",
      "--pg1-path=/restore/data",
      "--type=time",
      "--target=2024-01-02 03:04:05.678+00",
      "--target-action=promote",
      "--archive-mode=preserve",
      "restore",
    ]);
  });

  it("builds a scratch restore that never archives", () => {
    const argv = restoreArgv(inv, { dataDir: "/scratch", target: { type: "latest" }, archiveMode: "off", set: "20240102-030405F_20240103-030405D" });
    expect(argv).toContain("--archive-mode=off");
    expect(argv).toContain("--type=default");
    expect(argv).toContain("--set=20240102-030405F_20240103-030405D");
    expect(argv.at(-1)).toBe("restore");
  });

  it.each([
    ["a time without offset", { dataDir: "/d", target: { type: "time" as const, time: "2024-01-02 03:04:05" } }, /explicit UTC offset/],
    ["an invalid date", { dataDir: "/d", target: { type: "time" as const, time: new Date("nope") } }, /invalid Date/],
    ["a relative data directory", { dataDir: "data", target: { type: "latest" as const } }, /absolute path/],
    ["a target action on a latest restore", { dataDir: "/d", target: { type: "latest" as const }, targetAction: "pause" as const }, /time or immediate target only/],
    ["a bad set label", { dataDir: "/d", target: { type: "immediate" as const }, set: "latest" }, /not a pgBackRest backup label/],
  ])("refuses %s", (_what, params, message) => {
    expect(() => restoreArgv(inv, params)).toThrow(message);
  });

  it("formats target times as PostgreSQL reads them", () => {
    expect(formatTargetTime("2024-01-02 03:04:05.123456+02:00")).toBe("2024-01-02 03:04:05.123456+02:00");
    expect(formatTargetTime(new Date(0))).toBe("1970-01-01 00:00:00.000+00");
  });
});

/** Shaped like `pgbackrest info --output=json` of 2.45 (src/command/info/info.c), trimmed to what the metrics read. */
function infoFixture(): string {
  const backup = (label: string, type: string, start: number, stop: number, delta: number) => ({
    label,
    type,
    timestamp: { start, stop },
    info: { size: 30_000_000, delta, repository: { size: 4_000_000, delta: delta / 8 } },
    archive: { start: "000000010000000000000004", stop: "000000010000000000000004" },
    error: false,
  });
  return JSON.stringify([
    {
      name: "synaxic",
      status: { code: 0, message: "ok", lock: { backup: { held: false } } },
      backup: [
        backup("20240101-000000F", "full", 1_704_067_200, 1_704_067_260, 30_000_000),
        backup("20240108-000000F", "full", 1_704_672_000, 1_704_672_100, 32_000_000),
        backup("20240108-000000F_20240109-000000D", "diff", 1_704_758_400, 1_704_758_430, 800_000),
      ],
      archive: [{ id: "15-1", min: "000000010000000000000004", max: "0000000200000001000000A3" }],
      db: [],
      repo: [],
    },
  ]);
}

describe("renderPgbackrestMetrics", () => {
  const now = 1_704_760_000;
  const runs = [{ operation: "backup-diff", success: false, finishedAt: now - 60, durationSeconds: 12.5 }];

  it("renders the textfile metrics", () => {
    expect(renderPgbackrestMetrics(infoFixture(), { now, runs })).toMatchSnapshot();
  });

  it("reports the newest backup of each type, its age and the archive's newest timeline", () => {
    const text = renderPgbackrestMetrics(infoFixture(), { now, runs });
    expect(text).toContain('pgbackrest_backup_last_timestamp_seconds{stanza="synaxic",type="full"} 1704672100\n');
    expect(text).toContain(`pgbackrest_backup_last_age_seconds{stanza="synaxic",type="diff"} ${now - 1_704_758_430}\n`);
    expect(text).toContain('pgbackrest_backup_count{stanza="synaxic",type="full"} 2\n');
    expect(text).toContain('pgbackrest_backup_count{stanza="synaxic",type="incr"} 0\n');
    expect(text).not.toContain('pgbackrest_backup_last_timestamp_seconds{stanza="synaxic",type="incr"}');
    expect(text).toContain('pgbackrest_archive_max_timeline{stanza="synaxic",archive_id="15-1"} 2\n');
    expect(text).toContain('pgbackrest_archive_max_segment{stanza="synaxic",archive_id="15-1"} 419\n');
    expect(text).toContain('pgbackrest_run_last_success{operation="backup-diff"} 0\n');
    expect(text).toContain('pgbackrest_run_last_duration_seconds{operation="backup-diff"} 12.500\n');
    // Every sample line belongs to a declared family.
    const declared = new Set([...text.matchAll(/^# TYPE (\S+) gauge$/gm)].map((m) => m[1]));
    for (const l of text.split("\n").filter((x) => x && !x.startsWith("#"))) expect(declared.has(l.split("{")[0])).toBe(true);
  });

  it("refuses output that is not pgbackrest info JSON", () => {
    expect(() => renderPgbackrestMetrics("ERROR: [055]", { now })).toThrow(/not JSON/);
    expect(() => renderPgbackrestMetrics("{}", { now })).toThrow(/not a JSON array/);
    expect(() => parsePgbackrestInfo(JSON.stringify([{ name: "s", status: { code: 0 }, backup: [{ label: "x", type: "full" }], archive: [] }]))).toThrow(/timestamp.stop/);
    expect(() => renderPgbackrestMetrics(infoFixture(), { now, runs: [{ operation: "Backup Full", success: true, finishedAt: now }] })).toThrow(/operation/);
  });

  it("renders a stanza without backups yet", () => {
    const text = renderPgbackrestMetrics(JSON.stringify([{ name: "synaxic", status: { code: 2, message: "no valid backups" }, backup: [], archive: [{ id: "15-1", min: null, max: null }] }]), { now });
    expect(text).toContain('pgbackrest_stanza_status_code{stanza="synaxic"} 2\n');
    expect(text).not.toContain("pgbackrest_backup_newest_age_seconds");
    expect(text).not.toContain("pgbackrest_archive_info");
  });
});
