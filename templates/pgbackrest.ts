/**
 * pgBackRest 2.45 for Synaxic: WAL archiving and base backups of the
 * PostgreSQL cluster into S3-compatible object storage, encrypted by
 * pgBackRest, with point-in-time restore.
 *
 * Pure functions from typed parameters to file text or argv arrays; nothing
 * here touches Pulumi, the network or the disk. Every value is checked, so a
 * bad parameter fails at render time with a message that names it.
 *
 * What pgBackRest 2.45 does that these templates rely on (source read at the
 * release/2.45 tag of github.com/pgbackrest/pgbackrest):
 * - Configuration: `<config-path>/pgbackrest.conf` plus every `*.conf` file in
 *   `<config-path>/conf.d` (src/config/parse.c, cfgFileLoad rules; version.h:
 *   PROJECT_CONFIG_INCLUDE_PATH "conf.d"). The secrets live in that second
 *   file, 0600, owned by postgres.
 * - Secure options (repo-cipher-pass, repo-s3-key, repo-s3-key-secret) are
 *   refused on the command line: "option '%s' is not allowed on the
 *   command-line ... could expose secrets in the process list"
 *   (src/config/parse.c).
 * - The ini parser trims keys and values and splits at the first '='
 *   (src/common/ini.c), so values must not contain line breaks or start/end
 *   with blanks.
 * - TLS peers (the S3 endpoint and the pgBackRest TLS server) are checked by
 *   DNS name only: tlsClientHostVerify() compares the host name it connected
 *   to with the certificate's GEN_DNS subjectAltNames and ignores IP SANs
 *   (src/common/io/tls/client.c). So every host name below is a DNS name
 *   that the certificate names, never an IP address.
 * - compress-type accepts none/bz2/gz/lz4/zst (src/build/config/config.yaml);
 *   the Debian and PGDG builds link libzstd and liblz4.
 * - archive-push-queue-max: past the limit pgBackRest reports the WAL as
 *   archived and drops it, and in async mode drops the whole queue, "to
 *   prevent the log volume from filling up" (src/build/help/help.xml;
 *   src/command/archive/push/push.c, "dropped WAL file ... because archive
 *   queue exceeded").
 * - Sizes accept KiB/MiB/GiB suffixes (src/config/common.c, cfgParseSize).
 */
import { isIP } from "node:net";
import { sh } from "../lib/shell";

/** Thrown for any parameter a pgBackRest template refuses; the message says which and why. */
export class PgbackrestTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PgbackrestTemplateError";
  }
}

function fail(message: string): never {
  throw new PgbackrestTemplateError(message);
}

/** Where the files live inside the PostgreSQL container (the image built with pgBackRest). */
export const PGBACKREST_CONTAINER_PATHS = {
  /** --config-path: holds pgbackrest.conf and conf.d/. pgBackRest's own default, rendered explicitly anyway. */
  configPath: "/etc/pgbackrest",
  conf: "/etc/pgbackrest/pgbackrest.conf",
  /** The secrets file (0600, postgres): cipher pass and S3 keys. */
  secrets: "/etc/pgbackrest/conf.d/secrets.conf",
  /** CA that signed the S3 endpoint's certificate, when it is not a public CA. */
  s3CaFile: "/etc/pgbackrest/tls/s3-ca.crt",
  /** The PostgreSQL CA, for the TLS server (primary) and its clients (standbys). */
  tlsCaFile: "/etc/pgbackrest/tls/ca.crt",
  /** This host's pgBackRest TLS certificate: a server certificate on the primary, a client certificate on standbys. */
  tlsCertFile: "/etc/pgbackrest/tls/pgbackrest.crt",
  tlsKeyFile: "/etc/pgbackrest/tls/pgbackrest.key",
  /** Async archive queue (archive-push) and prefetch (archive-get): a persistent volume. */
  spoolPath: "/var/spool/pgbackrest",
  lockPath: "/tmp/pgbackrest",
  /** The node_exporter textfile the metrics function's output is written to. */
  metricsFile: "/var/lib/node_exporter/textfile/pgbackrest.prom",
} as const;

/** pgBackRest's TLS server port (the default of tls-server-port and pg-host-port). */
export const PGBACKREST_TLS_PORT = 8432;

/**
 * archive_timeout the program sets by default: an idle primary switches WAL
 * segment at least once a minute, so at most a minute of commits is only on
 * the primary's disk. Each forced switch costs one (mostly empty, well
 * compressed) segment in the repository.
 */
export const ARCHIVE_TIMEOUT_SECONDS_DEFAULT = 60;

/** Defaults the conf renderer applies. */
export const PGBACKREST_DEFAULTS = {
  compressType: "zst",
  compressLevel: 3,
  retentionFull: 2,
  retentionDiff: 6,
  processMax: 2,
  archivePushQueueMaxMiB: 1024,
  bundle: true,
} as const;

export type PgbackrestCompressType = "zst" | "lz4" | "gz" | "none";

/** The object-storage repository (repo1). */
export interface PgbackrestS3Repo {
  /**
   * S3 endpoint: a DNS name, optionally with ":port" (e.g.
   * "fsn1.your-objectstorage.com"). Requests use path-style URIs
   * (https://endpoint/bucket/key), so the certificate must name the endpoint
   * itself.
   */
  endpoint: string;
  bucket: string;
  region: string;
  /** Prefix inside the bucket (repo1-path), absolute, e.g. "/synaxic". */
  path: string;
  /** Verify the endpoint's certificate (default true; turning it off is refused unless allowInsecureTls is set). */
  verifyTls?: boolean;
  /** Only for tests against a throw-away endpoint. */
  allowInsecureTls?: boolean;
  /** CA file for the endpoint's certificate when it is not signed by a public CA. */
  caFile?: string;
  /** Full backups kept (repo1-retention-full, count); older ones and their WAL are expired. Default 2. */
  retentionFull?: number;
  /** Differential backups kept (repo1-retention-diff). Default 6 (a week of dailies between weekly fulls). */
  retentionDiff?: number;
  /** Multipart upload part size in MiB (repo1-storage-upload-chunk-size); pgBackRest's default when absent. */
  uploadChunkSizeMiB?: number;
}

/** The pgBackRest TLS server on the primary, which a standby's backup reaches the primary through. */
export interface PgbackrestTlsServer {
  /** Address to listen on (tls-server-address): an IP address or "0.0.0.0" inside a container. */
  address: string;
  port?: number;
  /** CA that signed the clients' certificates (the PostgreSQL CA). */
  caFile: string;
  /** Server certificate: its DNS SANs must include the name standbys use (primaryHost below). */
  certFile: string;
  keyFile: string;
  /** Client certificate common names allowed to use this stanza (tls-server-auth=<cn>=<stanza>). */
  authorizedClients: string[];
}

/** On a standby: back up from this standby, reaching the primary through its TLS server. */
export interface PgbackrestStandbyBackup {
  /** The primary's DNS name; its pgBackRest server certificate must name it (IP SANs are ignored). */
  primaryHost: string;
  primaryPort?: number;
  /** The primary's data directory (pg2-path). */
  primaryDataDir: string;
  /** The primary's PostgreSQL port and socket directory, as seen on the primary. */
  primaryPgPort?: number;
  primarySocketDir?: string;
  /** CA that signed the primary's server certificate. */
  caFile: string;
  /** This standby's client certificate (its CN must be in the primary's authorizedClients) and key. */
  certFile: string;
  keyFile: string;
}

export interface PgbackrestConfParams {
  /** Stanza name (one per fleet: every host of the fleet archives and backs up into it). */
  stanza: string;
  repo: PgbackrestS3Repo;
  /** The local PostgreSQL server (pg1). */
  pg: { dataDir: string; socketDir: string; port?: number };
  /** Async archive spool directory (spool-path), writable by postgres. */
  spoolPath: string;
  /** Lock directory (lock-path); default pgBackRest's /tmp/pgbackrest. */
  lockPath?: string;
  /**
   * Most WAL the async archive queue may hold, in MiB (archive-push-queue-max).
   * Past it pgBackRest drops the queued WAL instead of filling the disk:
   * PITR then has a gap until the next backup. Default 1024.
   */
  archivePushQueueMaxMiB?: number;
  compressType?: PgbackrestCompressType;
  compressLevel?: number;
  /** Combine small files into bundles (repo1-bundle); default true. */
  bundle?: boolean;
  /** Parallel processes for backup, restore, verify and async archiving; default 2. */
  processMax?: number;
  /** Console (stdout) log level for commands; default "info". File logging is off: the container's output is the log. */
  logLevelConsole?: "off" | "error" | "warn" | "info" | "detail" | "debug";
  /**
   * Seconds archive-push (and backup/check) wait for a WAL segment to reach
   * the repository (archive-timeout); pgBackRest's default 60 when absent.
   */
  archiveTimeoutSeconds?: number;
  /**
   * Network timeout in seconds (io-timeout); pgBackRest's default 60 when
   * absent. With the repository unreachable, an async archive-push run spends
   * about this long retrying before it gives up; the queue bound is only
   * checked when the next run starts, so this also bounds how long the queue
   * can grow past archive-push-queue-max.
   */
  ioTimeoutSeconds?: number;
  /** On the primary: run pgBackRest's TLS server for standbys' backups. */
  tlsServer?: PgbackrestTlsServer;
  /** On a standby: take backups here (backup-standby=y), with the primary as pg2 over TLS. */
  standbyBackup?: PgbackrestStandbyBackup;
}

export interface PgbackrestSecrets {
  /** repo1-cipher-pass: the aes-256-cbc passphrase (generated by the program; keep a copy outside the fleet). */
  cipherPass: string;
  /** S3 access key id and secret. */
  s3Key: string;
  s3KeySecret: string;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** A stanza name: lower-case letters, digits, '-' and '_' (it becomes a path in the repository). */
export function validateStanza(stanza: string): string {
  if (typeof stanza !== "string" || !/^[a-z0-9][a-z0-9_-]{0,63}$/.test(stanza)) {
    fail(`stanza ${JSON.stringify(stanza)} is not valid: use 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit`);
  }
  return stanza;
}

function iniValue(kind: string, value: string): string {
  if (typeof value !== "string" || value.length === 0) fail(`${kind} is empty`);
  if (CONTROL.test(value)) fail(`${kind} contains a control character or line break`);
  if (value.trim() !== value) fail(`${kind} starts or ends with a blank, which pgBackRest's config parser would strip`);
  return value;
}

function absPath(kind: string, path: string): string {
  iniValue(kind, path);
  if (!path.startsWith("/")) fail(`${kind} ${JSON.stringify(path)} must be an absolute path`);
  if (/\s/.test(path)) fail(`${kind} ${JSON.stringify(path)} contains a blank`);
  return path;
}

const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** A DNS name (pgBackRest verifies TLS peers by DNS name only, so an IP address would never verify). */
export function validateDnsName(kind: string, host: string): string {
  if (typeof host !== "string" || isIP(host) !== 0) {
    fail(`${kind} ${JSON.stringify(host)} must be a DNS name, not an IP address: pgBackRest checks the certificate's DNS names and ignores IP SANs`);
  }
  if (!DNS_NAME.test(host)) fail(`${kind} ${JSON.stringify(host)} is not a DNS name`);
  return host;
}

function port(kind: string, p: number): number {
  if (!Number.isInteger(p) || p < 1 || p > 65535) fail(`${kind} ${p} is not a TCP port`);
  return p;
}

function intInRange(kind: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) fail(`${kind} must be an integer from ${min} to ${max}, got ${v}`);
  return v;
}

function endpoint(e: string): string {
  if (typeof e !== "string") fail("repo.endpoint is missing");
  if (/^[a-z]+:\/\//i.test(e)) fail(`repo.endpoint ${JSON.stringify(e)} must be a host name (optionally :port), without a scheme: pgBackRest always uses HTTPS`);
  const m = /^([^:]+)(?::(\d+))?$/.exec(e);
  if (!m) fail(`repo.endpoint ${JSON.stringify(e)} must be host or host:port`);
  validateDnsName("repo.endpoint", m[1]!);
  if (m[2] !== undefined) port("repo.endpoint port", Number(m[2]));
  return e;
}

function bucket(b: string): string {
  // S3 bucket naming rules: 3-63 lower-case letters, digits, '.', '-'; starts and ends with a letter or digit.
  if (typeof b !== "string" || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(b) || b.includes("..")) {
    fail(`repo.bucket ${JSON.stringify(b)} is not a valid S3 bucket name (3-63 lower-case letters, digits, '.' or '-')`);
  }
  return b;
}

function region(r: string): string {
  if (typeof r !== "string" || !/^[a-z0-9-]{1,64}$/.test(r)) fail(`repo.region ${JSON.stringify(r)} is not a region name (lower-case letters, digits, '-')`);
  return r;
}

function clientCn(cn: string): string {
  iniValue("authorized client CN", cn);
  if (cn.includes("*")) fail(`authorized client CN ${JSON.stringify(cn)}: pgBackRest does not accept wildcards for the client CN`);
  if (cn.includes("=")) fail(`authorized client CN ${JSON.stringify(cn)} must not contain '='`);
  return cn;
}

function kv(key: string, value: string | number | boolean): string {
  const v = typeof value === "boolean" ? (value ? "y" : "n") : String(value);
  return `${key}=${v}`;
}

/**
 * pgbackrest.conf for one host: [global] with the S3 repository, archiving,
 * compression, retention and logging (plus the TLS server on the primary),
 * and the stanza section naming the local server as pg1 (and, on a standby
 * that takes the backups, the primary as pg2 over TLS). No secrets: those
 * are in the conf.d file from renderPgbackrestSecrets.
 */
export function renderPgbackrestConf(params: PgbackrestConfParams): string {
  const p = params;
  const stanza = validateStanza(p.stanza);
  const r = p.repo;
  if (!r) fail("repo is missing");
  const verifyTls = r.verifyTls ?? true;
  if (!verifyTls && !r.allowInsecureTls) fail("repo.verifyTls=false would accept any certificate for the object storage; give repo.caFile instead");
  const repoPath = absPath("repo.path", r.path);
  if (repoPath !== "/" && repoPath.endsWith("/")) fail(`repo.path ${JSON.stringify(repoPath)} must not end with '/'`);
  const compressType = p.compressType ?? PGBACKREST_DEFAULTS.compressType;
  if (!["zst", "lz4", "gz", "none"].includes(compressType)) fail(`compressType ${JSON.stringify(compressType)} must be one of zst, lz4, gz, none`);
  const levelRange: Record<string, [number, number]> = { zst: [-7, 22], lz4: [-5, 12], gz: [0, 9], none: [0, 0] };
  const [lmin, lmax] = levelRange[compressType]!;
  const compressLevel = p.compressLevel ?? (compressType === "zst" ? 3 : compressType === "lz4" ? 1 : compressType === "gz" ? 6 : 0);
  intInRange(`compressLevel for ${compressType}`, compressLevel, lmin, lmax);
  const retentionFull = intInRange("repo.retentionFull", r.retentionFull ?? PGBACKREST_DEFAULTS.retentionFull, 1, 9999999);
  const retentionDiff = intInRange("repo.retentionDiff", r.retentionDiff ?? PGBACKREST_DEFAULTS.retentionDiff, 1, 9999999);
  const processMax = intInRange("processMax", p.processMax ?? PGBACKREST_DEFAULTS.processMax, 1, 999);
  const queueMax = intInRange("archivePushQueueMaxMiB", p.archivePushQueueMaxMiB ?? PGBACKREST_DEFAULTS.archivePushQueueMaxMiB, 16, 4 * 1024 * 1024 * 1024);
  const logLevel = p.logLevelConsole ?? "info";
  if (!["off", "error", "warn", "info", "detail", "debug"].includes(logLevel)) fail(`logLevelConsole ${JSON.stringify(logLevel)} is not a pgBackRest log level`);
  if (p.tlsServer && p.standbyBackup) fail("tlsServer (primary) and standbyBackup (standby) cannot both be set for one host");

  const out: string[] = [
    `# pgbackrest.conf for stanza ${stanza}, rendered by the Synaxic deployment: do not edit by hand.`,
    "# Secrets (cipher pass, S3 keys) are in conf.d/, 0600.",
    "[global]",
    "# Repository: S3-compatible object storage, path-style, encrypted by pgBackRest",
    kv("repo1-type", "s3"),
    kv("repo1-s3-endpoint", endpoint(r.endpoint)),
    kv("repo1-s3-bucket", bucket(r.bucket)),
    kv("repo1-s3-region", region(r.region)),
    kv("repo1-s3-uri-style", "path"),
    kv("repo1-path", repoPath),
    kv("repo1-storage-verify-tls", verifyTls),
  ];
  if (r.caFile !== undefined) out.push(kv("repo1-storage-ca-file", absPath("repo.caFile", r.caFile)));
  if (r.uploadChunkSizeMiB !== undefined) out.push(kv("repo1-storage-upload-chunk-size", `${intInRange("repo.uploadChunkSizeMiB", r.uploadChunkSizeMiB, 1, 1024)}MiB`));
  out.push(
    kv("repo1-cipher-type", "aes-256-cbc"),
    kv("repo1-bundle", p.bundle ?? PGBACKREST_DEFAULTS.bundle),
    kv("repo1-retention-full-type", "count"),
    kv("repo1-retention-full", retentionFull),
    kv("repo1-retention-diff", retentionDiff),
    "",
    "# Compression and parallelism",
    kv("compress-type", compressType),
    kv("compress-level", compressLevel),
    kv("process-max", processMax),
    "",
    "# WAL archiving: asynchronous, with a bounded local queue (past it WAL is dropped, not the disk filled)",
    kv("archive-async", true),
    kv("spool-path", absPath("spoolPath", p.spoolPath)),
    kv("archive-push-queue-max", `${queueMax}MiB`),
    ...(p.archiveTimeoutSeconds !== undefined ? [kv("archive-timeout", intInRange("archiveTimeoutSeconds", p.archiveTimeoutSeconds, 1, 86400))] : []),
    ...(p.ioTimeoutSeconds !== undefined ? [kv("io-timeout", intInRange("ioTimeoutSeconds", p.ioTimeoutSeconds, 1, 3600))] : []),
    "",
    "# Backups: checkpoint at once instead of waiting for the next one",
    kv("start-fast", true),
    "",
    "# Logging: to the container's output only",
    kv("log-level-console", logLevel),
    kv("log-level-stderr", "off"),
    kv("log-level-file", "off"),
  );
  if (p.lockPath !== undefined) out.push(kv("lock-path", absPath("lockPath", p.lockPath)));
  if (p.tlsServer) {
    const t = p.tlsServer;
    if (!t.authorizedClients || t.authorizedClients.length === 0) fail("tlsServer.authorizedClients is empty: name the client certificate CNs of the standbys that take backups");
    const address = iniValue("tlsServer.address", t.address);
    if (isIP(address) === 0) fail(`tlsServer.address ${JSON.stringify(address)} must be an IP address to listen on`);
    out.push(
      "",
      "# pgBackRest TLS server: standbys taking backups reach this primary through it",
      kv("tls-server-address", address),
      kv("tls-server-port", port("tlsServer.port", t.port ?? PGBACKREST_TLS_PORT)),
      kv("tls-server-ca-file", absPath("tlsServer.caFile", t.caFile)),
      kv("tls-server-cert-file", absPath("tlsServer.certFile", t.certFile)),
      kv("tls-server-key-file", absPath("tlsServer.keyFile", t.keyFile)),
      ...[...new Set(t.authorizedClients.map(clientCn))].map((cn) => kv("tls-server-auth", `${cn}=${stanza}`)),
    );
  }
  out.push(
    "",
    `[${stanza}]`,
    "# pg1: the PostgreSQL server on this host",
    kv("pg1-path", absPath("pg.dataDir", p.pg.dataDir)),
    kv("pg1-socket-path", absPath("pg.socketDir", p.pg.socketDir)),
    kv("pg1-port", port("pg.port", p.pg.port ?? 5432)),
  );
  if (p.standbyBackup) {
    const s = p.standbyBackup;
    out.push(
      "",
      "# Backups run on this standby and copy its files; the primary (pg2) is reached through its TLS server",
      kv("backup-standby", true),
      kv("pg2-host-type", "tls"),
      kv("pg2-host", validateDnsName("standbyBackup.primaryHost", s.primaryHost)),
      kv("pg2-host-port", port("standbyBackup.primaryPort", s.primaryPort ?? PGBACKREST_TLS_PORT)),
      kv("pg2-host-ca-file", absPath("standbyBackup.caFile", s.caFile)),
      kv("pg2-host-cert-file", absPath("standbyBackup.certFile", s.certFile)),
      kv("pg2-host-key-file", absPath("standbyBackup.keyFile", s.keyFile)),
      kv("pg2-path", absPath("standbyBackup.primaryDataDir", s.primaryDataDir)),
      kv("pg2-port", port("standbyBackup.primaryPgPort", s.primaryPgPort ?? 5432)),
    );
    if (s.primarySocketDir !== undefined) out.push(kv("pg2-socket-path", absPath("standbyBackup.primarySocketDir", s.primarySocketDir)));
  }
  return out.join("\n") + "\n";
}

/**
 * The secrets file for conf.d (install it 0600, owned by postgres): the
 * repository's cipher pass and the S3 access key. pgBackRest refuses these
 * on the command line.
 */
export function renderPgbackrestSecrets(secrets: PgbackrestSecrets): string {
  const cipherPass = iniValue("cipherPass", secrets.cipherPass);
  if (cipherPass.length < 20) fail("cipherPass is shorter than 20 characters; generate a long random one (e.g. 48 random bytes, base64)");
  return [
    "# pgBackRest secrets, rendered by the Synaxic deployment (0600, postgres).",
    "[global]",
    kv("repo1-cipher-pass", cipherPass),
    kv("repo1-s3-key", iniValue("s3Key", secrets.s3Key)),
    kv("repo1-s3-key-secret", iniValue("s3KeySecret", secrets.s3KeySecret)),
    "",
  ].join("\n");
}

/** How to invoke pgBackRest: the binary and its config path (both default to the container's). */
export interface PgbackrestInvocation {
  stanza: string;
  /** pgbackrest binary; default "pgbackrest" (on PATH in the image). */
  bin?: string;
  /** --config-path: pgbackrest.conf and conf.d/ below it. Default PGBACKREST_CONTAINER_PATHS.configPath. */
  configPath?: string;
}

function base(inv: PgbackrestInvocation): string[] {
  const bin = inv.bin ?? "pgbackrest";
  iniValue("bin", bin);
  return [bin, `--config-path=${absPath("configPath", inv.configPath ?? PGBACKREST_CONTAINER_PATHS.configPath)}`, `--stanza=${validateStanza(inv.stanza)}`];
}

/**
 * archive_command for postgresql.conf (%p is the WAL file, relative to the
 * data directory). Console logging is lowered to warnings: PostgreSQL runs
 * it for every segment and its output lands in the server log.
 */
export function archiveCommand(inv: PgbackrestInvocation): string {
  return sh([...base(inv), "--log-level-console=warn", "archive-push", "%p"]);
}

/**
 * restore_command for postgresql.conf (%f the WAL file name wanted, %p where
 * to put it). With `scratch`, the one a throwaway server restored elsewhere
 * runs (a restore drill): archive-get resolves a relative %p against
 * pg1-path and reads pg_control from pg1-path (src/command/archive/get/get.c,
 * release/2.45: walPath() with cfgOptPgPath, pgControlFromFile(storagePg())),
 * so it names the scratch data directory, not the host's own server's; and
 * archive-get runs synchronously (--no-archive-async), so it never touches
 * the asynchronous queue in spool-path that the host's own server shares.
 */
export function restoreCommand(inv: PgbackrestInvocation, scratch?: { dataDir: string }): string {
  const extra = scratch ? [`--pg1-path=${absPath("scratch dataDir", scratch.dataDir)}`, "--no-archive-async"] : [];
  return sh([...base(inv), ...extra, "--log-level-console=warn", "archive-get", "%f", "%p"]);
}

/**
 * The postgresql.conf settings for archiving into the repository, as
 * [name, value] pairs (values unquoted; quote them with pgConfString).
 * archive_mode needs a restart; the others a reload.
 */
export function archiveSettings(inv: PgbackrestInvocation & { archiveTimeoutSeconds?: number }): [string, string][] {
  const timeout = intInRange("archiveTimeoutSeconds", inv.archiveTimeoutSeconds ?? ARCHIVE_TIMEOUT_SECONDS_DEFAULT, 0, 86400);
  return [
    ["archive_mode", "on"],
    ["archive_command", archiveCommand(inv)],
    ["archive_timeout", `${timeout}s`],
    ["restore_command", restoreCommand(inv)],
  ];
}

export function stanzaCreateArgv(inv: PgbackrestInvocation): string[] {
  return [...base(inv), "stanza-create"];
}

export type PgbackrestBackupType = "full" | "diff" | "incr";

export function backupArgv(inv: PgbackrestInvocation, type: PgbackrestBackupType): string[] {
  if (!["full", "diff", "incr"].includes(type)) fail(`backup type ${JSON.stringify(type)} must be full, diff or incr`);
  return [...base(inv), `--type=${type}`, "backup"];
}

/** Expires backups (and the WAL only they need) past the configured retention. */
export function expireArgv(inv: PgbackrestInvocation): string[] {
  return [...base(inv), "expire"];
}

/** Reads every file in the repository and checks it against its checksum. */
export function verifyArgv(inv: PgbackrestInvocation): string[] {
  return [...base(inv), "verify"];
}

/** Checks the configuration and that a WAL switch reaches the repository. */
export function checkArgv(inv: PgbackrestInvocation): string[] {
  return [...base(inv), "check"];
}

export function infoArgv(inv: PgbackrestInvocation): string[] {
  return [...base(inv), "--output=json", "info"];
}

/** Runs the TLS server (on the primary; a long-running process). */
export function serverArgv(inv: Omit<PgbackrestInvocation, "stanza">): string[] {
  const bin = inv.bin ?? "pgbackrest";
  iniValue("bin", bin);
  return [bin, `--config-path=${absPath("configPath", inv.configPath ?? PGBACKREST_CONTAINER_PATHS.configPath)}`, "server"];
}

export type PgbackrestRestoreTarget =
  /** Replay all archived WAL (the end of the newest timeline). */
  | { type: "latest" }
  /** Stop at the end of the backup: the earliest consistent point. */
  | { type: "immediate" }
  /** Stop just after the last transaction committed at or before this time. */
  | { type: "time"; time: Date | string };

export interface PgbackrestRestoreParams {
  /** The empty data directory to restore into (--pg1-path). */
  dataDir: string;
  target: PgbackrestRestoreTarget;
  /** What the server does at the target: promote (default: a new timeline, writable), pause, or shutdown. */
  targetAction?: "promote" | "pause" | "shutdown";
  /**
   * "off" for a scratch restore (a drill): archive_mode=off is written to the
   * restored cluster, so it never archives into the real repository.
   * Default "preserve".
   */
  archiveMode?: "off" | "preserve";
  /** A specific backup set label; default: pgBackRest chooses (for type=time, the newest backup that ends before the time). */
  set?: string;
  /**
   * Restore every tablespace below this directory (--tablespace-map-all)
   * instead of at its original path: a scratch restore must not write where
   * the host's own server keeps its tablespaces.
   */
  tablespaceMapAll?: string;
}

/** A recovery target time as PostgreSQL reads it: "YYYY-MM-DD HH:MM:SS[.ffffff]+00" (UTC). */
export function formatTargetTime(time: Date | string): string {
  if (time instanceof Date) {
    if (Number.isNaN(time.getTime())) fail("restore target time is an invalid Date");
    const iso = time.toISOString(); // 2024-01-02T03:04:05.678Z
    return `${iso.slice(0, 10)} ${iso.slice(11, 23)}+00`;
  }
  if (typeof time !== "string" || !/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}(:?\d{2})?)$/.test(time)) {
    fail(`restore target time ${JSON.stringify(time)} must look like "2024-01-02 03:04:05.678+00" (with an explicit UTC offset)`);
  }
  return time;
}

/** restore into params.dataDir (which must be empty), to the given target. */
export function restoreArgv(inv: PgbackrestInvocation, params: PgbackrestRestoreParams): string[] {
  const argv = [...base(inv), `--pg1-path=${absPath("restore dataDir", params.dataDir)}`];
  const t = params.target;
  if (!t || !["latest", "immediate", "time"].includes(t.type)) fail(`restore target type ${JSON.stringify((t as { type?: unknown } | undefined)?.type)} must be latest, immediate or time`);
  if (t.type === "time") argv.push("--type=time", `--target=${formatTargetTime(t.time)}`);
  else if (t.type === "immediate") argv.push("--type=immediate");
  else argv.push("--type=default");
  const action = params.targetAction ?? "promote";
  if (!["promote", "pause", "shutdown"].includes(action)) fail(`targetAction ${JSON.stringify(action)} must be promote, pause or shutdown`);
  if (t.type !== "latest") argv.push(`--target-action=${action}`);
  else if (params.targetAction !== undefined) fail("targetAction applies to a time or immediate target only (a latest restore replays to the end and promotes)");
  const archiveMode = params.archiveMode ?? "preserve";
  if (archiveMode !== "off" && archiveMode !== "preserve") fail(`archiveMode ${JSON.stringify(archiveMode)} must be off or preserve`);
  argv.push(`--archive-mode=${archiveMode}`);
  if (params.set !== undefined) {
    if (!/^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$/.test(params.set)) fail(`set ${JSON.stringify(params.set)} is not a pgBackRest backup label (e.g. 20240102-030405F)`);
    argv.push(`--set=${params.set}`);
  }
  if (params.tablespaceMapAll !== undefined) argv.push(`--tablespace-map-all=${absPath("tablespaceMapAll", params.tablespaceMapAll)}`);
  argv.push("restore");
  return argv;
}

/* ------------------------------------------------------------------------ */
/* Metrics: `pgbackrest info --output=json` as node_exporter textfile text. */

/** The parts of one backup in `pgbackrest info --output=json` (src/command/info/info.c) the metrics read. */
export interface PgbackrestInfoBackup {
  label: string;
  type: PgbackrestBackupType;
  timestamp: { start: number; stop: number };
  info: { size: number; delta: number; repository: { size: number; delta: number } };
  archive?: { start: string | null; stop: string | null };
  error?: boolean;
}

export interface PgbackrestInfoStanza {
  name: string;
  status: { code: number; message: string; lock?: { backup?: { held: boolean } } };
  backup: PgbackrestInfoBackup[];
  archive: { id: string; min: string | null; max: string | null }[];
}

/** The outcome of the last scheduled run of an operation, recorded by the scheduler. */
export interface PgbackrestRunResult {
  /** e.g. "backup-full", "backup-diff", "expire", "verify", "drill". */
  operation: string;
  success: boolean;
  /** When it finished (Unix seconds). */
  finishedAt: number;
  durationSeconds?: number;
}

export interface PgbackrestMetricsOptions {
  /** Unix seconds "now", for ages. */
  now: number;
  /** Last results of the scheduled operations. */
  runs?: PgbackrestRunResult[];
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function num(kind: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) fail(`pgbackrest info: ${kind} is not a number (${JSON.stringify(v)})`);
  return v;
}

const WAL_NAME = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;

/** Parses and checks the JSON `pgbackrest info --output=json` prints (an array of stanzas). */
export function parsePgbackrestInfo(json: string): PgbackrestInfoStanza[] {
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch (e) {
    fail(`pgbackrest info output is not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(data)) fail("pgbackrest info output is not a JSON array of stanzas");
  return data.map((s: unknown, i) => {
    const st = s as Partial<PgbackrestInfoStanza>;
    if (typeof st?.name !== "string") fail(`pgbackrest info: stanza ${i} has no name`);
    if (typeof st.status?.code !== "number") fail(`pgbackrest info: stanza ${st.name} has no status code`);
    if (!Array.isArray(st.backup) || !Array.isArray(st.archive)) fail(`pgbackrest info: stanza ${st.name} has no backup or archive list`);
    for (const b of st.backup) {
      if (!["full", "diff", "incr"].includes(b.type)) fail(`pgbackrest info: backup ${b.label} has type ${JSON.stringify(b.type)}`);
      num(`backup ${b.label} timestamp.stop`, b.timestamp?.stop);
      num(`backup ${b.label} timestamp.start`, b.timestamp?.start);
      num(`backup ${b.label} info.size`, b.info?.size);
      num(`backup ${b.label} info.repository.delta`, b.info?.repository?.delta);
    }
    return st as PgbackrestInfoStanza;
  });
}

/**
 * node_exporter textfile metrics from `pgbackrest info --output=json`:
 * per stanza the status, newest backup of each type (time, age, duration,
 * sizes), backup counts, the bytes the backups take in the repository, and
 * the archived WAL range (its newest timeline); plus the last result of each
 * scheduled operation. Write it to a temporary file and rename it into the
 * textfile directory, so that a scrape never reads half a file.
 */
export function renderPgbackrestMetrics(infoJson: string, opts: PgbackrestMetricsOptions): string {
  const stanzas = parsePgbackrestInfo(infoJson);
  const now = num("now", opts.now);
  const families = new Map<string, { help: string; samples: string[] }>();
  const put = (name: string, help: string, labels: Record<string, string>, value: number) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { help, samples: [] }));
    const l = Object.entries(labels)
      .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
      .join(",");
    f.samples.push(`${name}{${l}} ${Number.isInteger(value) ? value : value.toFixed(3)}`);
  };
  for (const s of stanzas) {
    const stanza = { stanza: s.name };
    put("pgbackrest_stanza_status_code", "pgBackRest stanza status code (0 ok, 2 no valid backups, others errors; see pgbackrest info)", stanza, s.status.code);
    put("pgbackrest_backup_lock_held", "1 while a backup holds the stanza's lock", stanza, s.status.lock?.backup?.held ? 1 : 0);
    for (const type of ["full", "diff", "incr"] as const) {
      const ofType = s.backup.filter((b) => b.type === type);
      put("pgbackrest_backup_count", "Backups of this type in the repository", { ...stanza, type }, ofType.length);
      const newest = ofType.reduce<PgbackrestInfoBackup | undefined>((a, b) => (!a || b.timestamp.stop > a.timestamp.stop ? b : a), undefined);
      if (!newest) continue;
      const l = { ...stanza, type };
      put("pgbackrest_backup_last_timestamp_seconds", "When the newest backup of this type finished (Unix seconds)", l, newest.timestamp.stop);
      put("pgbackrest_backup_last_age_seconds", "Seconds since the newest backup of this type finished", l, Math.max(0, now - newest.timestamp.stop));
      put("pgbackrest_backup_last_duration_seconds", "How long the newest backup of this type took", l, newest.timestamp.stop - newest.timestamp.start);
      put("pgbackrest_backup_last_database_bytes", "Database size the newest backup of this type covers", l, newest.info.size);
      put("pgbackrest_backup_last_repo_delta_bytes", "Bytes the newest backup of this type added to the repository", l, newest.info.repository.delta);
      put("pgbackrest_backup_last_error", "1 when pgBackRest found errors (e.g. page checksum failures) in the newest backup of this type", l, newest.error ? 1 : 0);
    }
    const newestAny = s.backup.reduce<PgbackrestInfoBackup | undefined>((a, b) => (!a || b.timestamp.stop > a.timestamp.stop ? b : a), undefined);
    if (newestAny) put("pgbackrest_backup_newest_age_seconds", "Seconds since the newest backup of any type finished", stanza, Math.max(0, now - newestAny.timestamp.stop));
    put("pgbackrest_repo_backup_bytes", "Bytes the stanza's backups take in the repository (sum of each backup's delta; WAL not included)", stanza,
      s.backup.reduce((t, b) => t + b.info.repository.delta, 0));
    for (const a of s.archive) {
      if (a.min === null || a.max === null) continue;
      const mn = WAL_NAME.exec(a.min);
      const mx = WAL_NAME.exec(a.max);
      if (!mn || !mx) fail(`pgbackrest info: archive ${a.id} min/max ${a.min}/${a.max} are not WAL file names`);
      put("pgbackrest_archive_info", "Archived WAL range of the stanza (labels min and max); always 1", { ...stanza, archive_id: a.id, min: a.min, max: a.max }, 1);
      put("pgbackrest_archive_max_timeline", "Timeline of the newest archived WAL file", { ...stanza, archive_id: a.id }, parseInt(mx[1]!, 16));
      put("pgbackrest_archive_max_segment", "Position of the newest archived WAL file within its timeline (log * 2^32 / segment size + segment; 16 MiB segments: log * 256 + segment)",
        { ...stanza, archive_id: a.id }, parseInt(mx[2]!, 16) * 256 + parseInt(mx[3]!, 16));
    }
  }
  for (const r of opts.runs ?? []) {
    if (!/^[a-z][a-z0-9-]{0,31}$/.test(r.operation)) fail(`run operation ${JSON.stringify(r.operation)} must be lower-case letters, digits and '-'`);
    const l = { operation: r.operation };
    put("pgbackrest_run_last_success", "1 when the last scheduled run of this operation succeeded", l, r.success ? 1 : 0);
    put("pgbackrest_run_last_timestamp_seconds", "When the last scheduled run of this operation finished (Unix seconds)", l, num("run finishedAt", r.finishedAt));
    if (r.durationSeconds !== undefined) put("pgbackrest_run_last_duration_seconds", "How long the last scheduled run of this operation took", l, num("run durationSeconds", r.durationSeconds));
  }
  const out: string[] = [];
  for (const [name, f] of families) out.push(`# HELP ${name} ${f.help}`, `# TYPE ${name} gauge`, ...f.samples);
  return out.join("\n") + "\n";
}
