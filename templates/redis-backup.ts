/**
 * Redis snapshots into the same S3-compatible object storage as the
 * PostgreSQL backups, and their restore.
 *
 * The snapshot is an RDB file the master streams to `redis-cli --rdb`, as it
 * would to a new replica; redis-cli 7.0 sends `REPLCONF rdb-only 1` and then
 * `SYNC` (src/redis-cli.c, sendReplconf/sendSync, tag 7.0.15). So the ACL
 * user it logs in as needs exactly +sync, +replconf and +ping: no key access
 * and no other command (the fleet's replica user has +psync, not +sync).
 * The file is checked with redis-check-rdb, encrypted with
 * `openssl enc -aes-256-cbc -pbkdf2` (passphrase from a file), and uploaded
 * with curl's AWS Signature V4 signing (`--aws-sigv4`, curl >= 7.75), the
 * S3 key in a curl config file (-K), never in an argv.
 *
 * Restoring: Redis loads dump.rdb at start only when appendonly is off; with
 * appendonly yes it loads the AOF (appendonlydir) and ignores dump.rdb, even
 * when there is no AOF at all (src/server.c loadDataFromDisk, tag 7.0.15),
 * so a restored snapshot would be silently replaced by an empty data set. The
 * restore therefore starts the server once with `--appendonly no`, then turns
 * AOF on at runtime (CONFIG SET appendonly yes), which writes a new AOF from
 * the loaded data; later starts use the normal redis.conf.
 *
 * Pure functions from typed parameters to text; user values are quoted with
 * lib/shell.ts.
 */
import { isIP } from "node:net";
import { sh, shellQuote } from "../lib/shell";

export class RedisBackupTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RedisBackupTemplateError";
  }
}

function fail(message: string): never {
  throw new RedisBackupTemplateError(message);
}

/** The fleet's backup user (its users.acl line: renderRedisBackupAclLine). */
export const REDIS_BACKUP_USER = "backup";

/** The backup user's rules after "reset on #<hash>": what redis-cli --rdb sends, nothing else. */
export const REDIS_BACKUP_ACL_RULES = ["-@all", "+sync", "+replconf", "+ping"] as const;

/** First bytes of every RDB file ("REDIS" and a 4-digit version). */
export const RDB_MAGIC = "REDIS";

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

function path(kind: string, p: string): string {
  if (typeof p !== "string" || !p.startsWith("/")) fail(`${kind} ${JSON.stringify(p)} must be an absolute path`);
  if (CONTROL.test(p)) fail(`${kind} ${JSON.stringify(p)} contains a control character`);
  return p;
}

function userName(kind: string, name: string): string {
  if (typeof name !== "string" || !/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/.test(name)) fail(`${kind} ${JSON.stringify(name)} must be 1-64 letters, digits, '_', '.' or '-'`);
  return name;
}

function label(kind: string, v: string): string {
  if (typeof v !== "string" || !/^[a-z0-9][a-z0-9-]{0,62}$/.test(v)) fail(`${kind} ${JSON.stringify(v)} must be 1-63 lower-case letters, digits or '-'`);
  return v;
}

const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function host(kind: string, h: string): string {
  if (typeof h !== "string" || (isIP(h) === 0 && !DNS_NAME.test(h))) fail(`${kind} ${JSON.stringify(h)} is neither an IP address nor a host name`);
  return h;
}

function port(kind: string, p: number): number {
  if (!Number.isInteger(p) || p < 1 || p > 65535) fail(`${kind} ${p} is not a TCP port`);
  return p;
}

/** The ACL line of the backup user, to append to users.acl (password stored as its SHA-256, like the other users). */
export function renderRedisBackupAclLine(user: { name: string; passwordSha256Hex: string }): string {
  const name = userName("backup user name", user.name);
  if (!/^[0-9a-f]{64}$/.test(user.passwordSha256Hex)) fail("passwordSha256Hex must be the password's SHA-256 in lower-case hex (redisAclPasswordHash without '#')");
  return ["user", name, "reset", "on", `#${user.passwordSha256Hex}`, ...REDIS_BACKUP_ACL_RULES].join(" ");
}

/** Where the snapshots go in the object storage. */
export interface RedisS3Target {
  /** DNS name of the S3 endpoint, optionally ":port" (HTTPS, path-style). */
  endpoint: string;
  bucket: string;
  region: string;
  /** Key prefix, e.g. "synaxic/redis" (no leading or trailing '/'). */
  prefix: string;
  /** CA for the endpoint's certificate when it is not a public CA. */
  caFile?: string;
  /** curl config file (0600) from renderS3CurlCredentials. */
  credentialsFile: string;
}

function s3(t: RedisS3Target): RedisS3Target {
  const m = /^([^:/]+)(?::(\d+))?$/.exec(t.endpoint ?? "");
  if (!m || isIP(m[1]!) !== 0 || !DNS_NAME.test(m[1]!)) fail(`s3.endpoint ${JSON.stringify(t.endpoint)} must be a DNS name, optionally with :port, without a scheme`);
  if (m[2] !== undefined) port("s3.endpoint port", Number(m[2]));
  if (typeof t.bucket !== "string" || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(t.bucket)) fail(`s3.bucket ${JSON.stringify(t.bucket)} is not a valid S3 bucket name`);
  if (typeof t.region !== "string" || !/^[a-z0-9-]{1,64}$/.test(t.region)) fail(`s3.region ${JSON.stringify(t.region)} is not a region name`);
  // Characters that need no percent-encoding in a URL path or a SigV4 canonical URI, so the key is signed as sent.
  if (typeof t.prefix !== "string" || !/^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/.test(t.prefix) || t.prefix.includes("//")) {
    fail(`s3.prefix ${JSON.stringify(t.prefix)} must be letters, digits, '.', '_', '-' and '/', without leading, trailing or double '/'`);
  }
  if (t.caFile !== undefined) path("s3.caFile", t.caFile);
  path("s3.credentialsFile", t.credentialsFile);
  return t;
}

/**
 * The curl config file holding the S3 key (install 0600): curl reads
 * `user = "KEY:SECRET"` from it with -K, so the secret is never in an argv.
 */
export function renderS3CurlCredentials(creds: { s3Key: string; s3KeySecret: string }): string {
  for (const [k, v] of [["s3Key", creds.s3Key], ["s3KeySecret", creds.s3KeySecret]] as const) {
    if (typeof v !== "string" || v.length === 0) fail(`${k} is empty`);
    if (CONTROL.test(v)) fail(`${k} contains a control character or line break`);
  }
  if (creds.s3Key.includes(":")) fail("s3Key must not contain ':' (curl splits user:password at the first ':')");
  // curl config: inside double quotes, backslash escapes the next character.
  const q = (s: string) => s.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
  return `user = "${q(creds.s3Key)}:${q(creds.s3KeySecret)}"\n`;
}

export interface RedisSnapshotParams {
  /** Name of the server in the object keys (e.g. the host name). */
  name: string;
  /** The master, as the job reaches it over TLS. */
  redis: { host: string; port?: number; caFile: string; user: string; passwordFile: string };
  /** Directory for the temporary RDB and its encrypted copy (removed after the upload). */
  workDir: string;
  /** File holding the passphrase of the snapshot encryption. */
  encryptionPassFile: string;
  s3: RedisS3Target;
  /** Binaries; default on PATH. */
  bin?: { redisCli?: string; redisCheckRdb?: string; openssl?: string; curl?: string };
  /** After the upload, the uploaded (encrypted) object's size in bytes is written to this file. */
  sizeFile?: string;
}

function curlBase(t: RedisS3Target, bin: string): string[] {
  return [bin, "--fail", "--silent", "--show-error", "--retry", "3", "--aws-sigv4", `aws:amz:${t.region}:s3`, "-K", t.credentialsFile, ...(t.caFile ? ["--cacert", t.caFile] : [])];
}

function objectUrl(t: RedisS3Target, key: string): string {
  return `https://${t.endpoint}/${t.bucket}/${key}`;
}

/** `openssl` arguments of the snapshots' encryption (add -d to decrypt, and -pass). */
export const OPENSSL_ENC = ["enc", "-aes-256-cbc", "-pbkdf2", "-iter", "200000", "-md", "sha256"];

/**
 * A bash script that takes one snapshot: RDB from the master through the
 * backup user, checked, encrypted, uploaded as <prefix>/<name>/<UTC time>.rdb.enc
 * with its SHA-256 signed into the request, then <prefix>/<name>/LATEST
 * naming it. Prints the object key. Exits non-zero on any failure.
 */
export function renderRedisSnapshotScript(params: RedisSnapshotParams): string {
  const p = params;
  const name = label("name", p.name);
  const t = s3(p.s3);
  const r = p.redis;
  const bin = { redisCli: "redis-cli", redisCheckRdb: "redis-check-rdb", openssl: "openssl", curl: "curl", ...p.bin };
  const cli = [bin.redisCli, "--tls", "--cacert", path("redis.caFile", r.caFile), "-h", host("redis.host", r.host), "-p", String(port("redis.port", r.port ?? 6380)), "--user", userName("redis.user", r.user), "--no-auth-warning"];
  const work = path("workDir", p.workDir);
  const pass = path("encryptionPassFile", p.encryptionPassFile);
  const prefix = `${t.prefix}/${name}`;
  return [
    "#!/bin/bash",
    "# Redis snapshot to object storage, rendered by templates/redis-backup.ts.",
    "set -euo pipefail",
    "umask 077",
    `WORK=${shellQuote(work)}`,
    `PREFIX=${shellQuote(prefix)}`,
    `BASE_URL=${shellQuote(objectUrl(t, ""))}`,
    'ts=$(date -u +%Y%m%dT%H%M%SZ)',
    'key="$PREFIX/$ts.rdb.enc"',
    'rdb="$WORK/snapshot-$ts.rdb"',
    'trap \'rm -f "$rdb" "$rdb.enc"\' EXIT',
    `REDISCLI_AUTH=$(cat ${shellQuote(path("redis.passwordFile", r.passwordFile))})`,
    "export REDISCLI_AUTH",
    `${sh(cli)} --rdb "$rdb" >&2`,
    "unset REDISCLI_AUTH",
    `[ "$(head -c 5 "$rdb")" = ${RDB_MAGIC} ] || { echo "snapshot is not an RDB file" >&2; exit 1; }`,
    `${sh([bin.redisCheckRdb])} "$rdb" >&2`,
    `${sh([bin.openssl, ...OPENSSL_ENC, "-salt", "-pass", `file:${pass}`])} -in "$rdb" -out "$rdb.enc"`,
    'sha=$(sha256sum "$rdb.enc" | cut -d" " -f1)',
    `${sh(curlBase(t, bin.curl))} -H "x-amz-content-sha256: $sha" -T "$rdb.enc" "$BASE_URL$key" >&2`,
    ...(p.sizeFile !== undefined ? [`stat -c %s "$rdb.enc" > ${shellQuote(path("sizeFile", p.sizeFile))}`] : []),
    `printf '%s' "$key" > "$rdb.enc"`,
    'sha=$(sha256sum "$rdb.enc" | cut -d" " -f1)',
    `${sh(curlBase(t, bin.curl))} -H "x-amz-content-sha256: $sha" -T "$rdb.enc" "$BASE_URL$PREFIX/LATEST" >&2`,
    'echo "$key"',
    "",
  ].join("\n");
}

export interface RedisRestoreFetchParams {
  name: string;
  /**
   * Object key of the snapshot; default: the script's first argument when it
   * is given one (checked to be a snapshot of this series), else the one
   * <prefix>/<name>/LATEST names.
   */
  objectKey?: string;
  /** The (stopped) server's data directory: dump.rdb is written there and its AOF directory removed. */
  dataDir: string;
  /** The AOF directory name (appenddirname); default "appendonlydir". */
  appendDirName?: string;
  encryptionPassFile: string;
  s3: RedisS3Target;
  /** Owner of the installed dump.rdb when the script runs as root (the redis user: 999:999 in the official image). */
  owner?: { uid: number; gid: number };
  bin?: { redisCheckRdb?: string; openssl?: string; curl?: string };
}

/**
 * A bash script that fetches a snapshot into a stopped server's data
 * directory: download, decrypt, check, install as dump.rdb, and remove the
 * AOF directory (it would otherwise win over dump.rdb). Then start the
 * server with redisRestoreFirstStartArgv and turn AOF back on with
 * REDIS_RESTORE_ENABLE_AOF.
 */
export function renderRedisRestoreFetchScript(params: RedisRestoreFetchParams): string {
  const p = params;
  const name = label("name", p.name);
  const t = s3(p.s3);
  const bin = { redisCheckRdb: "redis-check-rdb", openssl: "openssl", curl: "curl", ...p.bin };
  if (p.objectKey !== undefined && (typeof p.objectKey !== "string" || !p.objectKey.startsWith(`${t.prefix}/${name}/`) || !/^[a-zA-Z0-9._/-]+\.rdb\.enc$/.test(p.objectKey))) {
    fail(`objectKey ${JSON.stringify(p.objectKey)} must be a snapshot key under ${t.prefix}/${name}/ ending in .rdb.enc`);
  }
  const aofDir = p.appendDirName ?? "appendonlydir";
  if (!/^[a-zA-Z0-9._-]+$/.test(aofDir) || aofDir === "." || aofDir === "..") fail(`appendDirName ${JSON.stringify(aofDir)} must be a plain directory name`);
  return [
    "#!/bin/bash",
    "# Fetches a Redis snapshot into a stopped server's data directory, rendered by templates/redis-backup.ts.",
    "set -euo pipefail",
    "umask 077",
    `DATA=${shellQuote(path("dataDir", p.dataDir))}`,
    `BASE_URL=${shellQuote(objectUrl(t, ""))}`,
    ...(p.objectKey !== undefined
      ? [`key=${shellQuote(p.objectKey)}`]
      : [
          `PREFIX=${shellQuote(`${t.prefix}/${name}`)}`,
          'key="${1:-}"',
          `[ -n "$key" ] || key=$(${sh(curlBase(t, bin.curl))} -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" ${shellQuote(objectUrl(t, `${t.prefix}/${name}/LATEST`))})`,
          '[[ "${key#"$PREFIX/"}" =~ ^[0-9]{8}T[0-9]{6}Z\\.rdb\\.enc$ ]] && [ "${key%/*}" = "$PREFIX" ] || { echo "not a snapshot of $PREFIX: $key" >&2; exit 1; }',
        ]),
    'case "$key" in *.rdb.enc) ;; *) echo "not a snapshot key: $key" >&2; exit 1 ;; esac',
    'tmp="$DATA/.restore-$$"',
    'trap \'rm -f "$tmp.enc" "$tmp.rdb"\' EXIT',
    `${sh(curlBase(t, bin.curl))} -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -o "$tmp.enc" "$BASE_URL$key"`,
    `${sh([bin.openssl, ...OPENSSL_ENC, "-d", "-pass", `file:${path("encryptionPassFile", p.encryptionPassFile)}`])} -in "$tmp.enc" -out "$tmp.rdb"`,
    `[ "$(head -c 5 "$tmp.rdb")" = ${RDB_MAGIC} ] || { echo "decrypted snapshot is not an RDB file (wrong passphrase?)" >&2; exit 1; }`,
    `${sh([bin.redisCheckRdb])} "$tmp.rdb" >&2`,
    ...(p.owner !== undefined
      ? [`chown ${intId("owner.uid", p.owner.uid)}:${intId("owner.gid", p.owner.gid)} "$tmp.rdb"`]
      : []),
    `rm -rf "$DATA"/${shellQuote(aofDir)}`,
    'mv "$tmp.rdb" "$DATA/dump.rdb"',
    'echo "restored $key into $DATA/dump.rdb"',
    "",
  ].join("\n");
}

function intId(kind: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 4294967294) fail(`${kind} ${v} is not a user or group id`);
  return v;
}

/** The first start after a restore: the normal config, with AOF off so that dump.rdb is loaded. */
export function redisRestoreFirstStartArgv(confFile: string, redisServer = "redis-server"): string[] {
  return [redisServer, path("confFile", confFile), "--appendonly", "no"];
}

/**
 * Run (as an admin user) once the restored server has loaded dump.rdb: AOF
 * on again, which rewrites the AOF from the loaded data; wait until INFO
 * persistence shows aof_rewrite_in_progress:0 and aof_last_bgrewrite_status:ok
 * before the next restart.
 */
export const REDIS_RESTORE_ENABLE_AOF: readonly (readonly string[])[] = [["CONFIG", "SET", "appendonly", "yes"]];

/** The SHA-256 of an empty payload, which a signed DELETE carries (AWS Signature V4). */
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

export interface RedisSnapshotExpireParams {
  /** The series' name, as the snapshots were taken with (RedisSnapshotParams.name). */
  name: string;
  s3: RedisS3Target;
  /** How many snapshots to keep, newest first; the one LATEST names is never removed. */
  retention: number;
  bin?: { curl?: string };
}

/**
 * A bash script that expires a series' old snapshots: it lists
 * <prefix>/<name>/ (S3 ListObjectsV2, every page), keeps the `retention`
 * newest snapshots (their keys are UTC times of fixed width, so names sort as
 * times) and the one LATEST names, and deletes the rest. Objects other than
 * snapshots are left alone. Prints what it deleted and kept; exits non-zero
 * when a listing or a deletion fails (a deletion that failed is retried by
 * the next run, which lists it again).
 *
 * curl signs the query string exactly as given (lib/http_aws_sigv4.c at
 * curl-7_88_1, Curl_output_aws_sigv4: the CanonicalQueryString is
 * `data->state.up.query`, neither sorted nor encoded), while S3 signs it
 * sorted by name with RFC 3986-encoded values, so the query is built in that
 * form here; later curl versions that canonicalise it themselves arrive at
 * the same string. The payload hash comes from the x-amz-content-sha256
 * header when one is given (parse_content_sha_hdr, same file).
 */
export function renderRedisSnapshotExpireScript(params: RedisSnapshotExpireParams): string {
  const p = params;
  const name = label("name", p.name);
  const t = s3(p.s3);
  if (!Number.isInteger(p.retention) || p.retention < 1 || p.retention > 1000) fail(`retention ${p.retention} must be a whole number of snapshots from 1 to 1000`);
  const curl = sh(curlBase(t, p.bin?.curl ?? "curl"));
  return [
    "#!/bin/bash",
    "# Expires old Redis snapshots in object storage, rendered by templates/redis-backup.ts.",
    "set -euo pipefail",
    "umask 077",
    "export LC_ALL=C",
    `PREFIX=${shellQuote(`${t.prefix}/${name}`)}`,
    `BASE_URL=${shellQuote(objectUrl(t, ""))}`,
    `KEEP=${p.retention}`,
    "# RFC 3986 percent-encoding of everything but the unreserved characters (SigV4's canonical query).",
    "urlencode() { local s=$1 out= c i; for ((i = 0; i < ${#s}; i++)); do c=${s:i:1}; case $c in [A-Za-z0-9._~-]) out+=$c ;; *) out+=$(printf '%%%02X' \"'$c\") ;; esac; done; printf '%s' \"$out\"; }",
    "list=$(mktemp)",
    'trap \'rm -f "$list"\' EXIT',
    "token=",
    "while :; do",
    '  query="list-type=2&prefix=$(urlencode "$PREFIX/")"',
    '  [ -z "$token" ] || query="continuation-token=$(urlencode "$token")&$query"',
    `  page=$(${curl} -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$BASE_URL?$query")`,
    "  printf '%s' \"$page\" | { grep -o '<Key>[^<]*</Key>' || true; } | sed -e 's/^<Key>//' -e 's/<\\/Key>$//' >> \"$list\"",
    '  case "$page" in',
    "    *'<IsTruncated>true</IsTruncated>'*)",
    "      token=$(printf '%s' \"$page\" | grep -o '<NextContinuationToken>[^<]*' | head -n 1 | cut -d '>' -f 2)",
    '      [ -n "$token" ] || { echo "a truncated listing without a continuation token" >&2; exit 1; } ;;',
    "    *) break ;;",
    "  esac",
    "done",
    "# Snapshots only, newest first.",
    "mapfile -t snapshots < <(while IFS= read -r k; do [[ \"${k#\"$PREFIX/\"}\" =~ ^[0-9]{8}T[0-9]{6}Z\\.rdb\\.enc$ ]] && [ \"${k%/*}\" = \"$PREFIX\" ] && printf '%s\\n' \"$k\"; done < \"$list\" | sort -r)",
    `latest=$(${curl} -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$BASE_URL$PREFIX/LATEST" 2>/dev/null || true)`,
    "expired=0",
    'for k in "${snapshots[@]:KEEP}"; do',
    '  [ "$k" = "$latest" ] && continue',
    `  ${curl} -X DELETE -H "x-amz-content-sha256: ${EMPTY_SHA256}" "$BASE_URL$k" >&2`,
    '  echo "expired $k"',
    "  expired=$((expired + 1))",
    "done",
    'echo "kept $(( ${#snapshots[@]} - expired )) snapshots, expired $expired"',
    "",
  ].join("\n");
}

export interface RedisRestoreInstallParams {
  /** The fetched, decrypted and checked snapshot (renderRedisRestoreFetchScript's dump.rdb). */
  dumpFile: string;
  /** The stopped server's data directory (its volume). */
  dataDir: string;
  /** appenddirname and appendfilename of the server's redis.conf (templates/redis.ts renders appendonlydir and appendonly.aof). */
  appendDirName?: string;
  appendFileName?: string;
  /** Seconds to wait for the load and for the AOF rewrite each; default 600. */
  waitSeconds?: number;
  bin?: { redisServer?: string; redisCli?: string; redisCheckRdb?: string };
}

/**
 * A bash script that installs a fetched snapshot into a stopped server's
 * data directory so that the server's own next start (appendonly yes) loads
 * it: it moves the directory's AOF and dump.rdb aside (kept, named
 * *.before-restore-<time>), puts the snapshot in as dump.rdb, starts a
 * throwaway redis-server on that directory with a configuration of its own
 * (no TCP port, a Unix socket in a private directory, the server's AOF
 * names) and `--appendonly no` (redisRestoreFirstStartArgv: so that it loads
 * dump.rdb), turns AOF on at runtime (REDIS_RESTORE_ENABLE_AOF), waits for
 * the rewrite that writes the new AOF from the loaded data, and shuts the
 * throwaway server down. Run it as the server's user, with the server
 * stopped; then start the server as usual.
 */
export function renderRedisRestoreInstallScript(params: RedisRestoreInstallParams): string {
  const p = params;
  const aofDir = p.appendDirName ?? "appendonlydir";
  const aofFile = p.appendFileName ?? "appendonly.aof";
  for (const [k, v] of [["appendDirName", aofDir], ["appendFileName", aofFile]] as const) {
    if (!/^[a-zA-Z0-9._-]+$/.test(v) || v === "." || v === "..") fail(`${k} ${JSON.stringify(v)} must be a plain file name`);
  }
  const wait = p.waitSeconds ?? 600;
  if (!Number.isInteger(wait) || wait < 1 || wait > 86_400) fail(`waitSeconds ${wait} must be a whole number of seconds from 1 to 86400`);
  const bin = { redisServer: "redis-server", redisCli: "redis-cli", redisCheckRdb: "redis-check-rdb", ...p.bin };
  const data = path("dataDir", p.dataDir);
  if (/["\\\s]/.test(data)) fail(`dataDir ${JSON.stringify(data)} must not contain blanks, quotes or backslashes (it goes into a redis.conf)`);
  const cli = `${sh([bin.redisCli])} -s "$WORK/redis.sock"`;
  return [
    "#!/bin/bash",
    "# Installs a Redis snapshot into a stopped server's data directory, rendered by templates/redis-backup.ts.",
    "set -euo pipefail",
    "umask 077",
    `SRC=${shellQuote(path("dumpFile", p.dumpFile))}`,
    `DATA=${shellQuote(data)}`,
    `AOF_DIR=${shellQuote(aofDir)}`,
    "WORK=$(mktemp -d /tmp/synaxic-redis-restore.XXXXXX)",
    "pid=",
    'cleanup() { if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi; rm -rf "$WORK"; }',
    "trap cleanup EXIT",
    `[ "$(head -c 5 "$SRC")" = ${RDB_MAGIC} ] || { echo "$SRC is not an RDB file" >&2; exit 1; }`,
    `${sh([bin.redisCheckRdb])} "$SRC" >&2`,
    "ts=$(date -u +%Y%m%dT%H%M%SZ)",
    '[ ! -e "$DATA/$AOF_DIR" ] || mv "$DATA/$AOF_DIR" "$DATA/$AOF_DIR.before-restore-$ts"',
    '[ ! -e "$DATA/dump.rdb" ] || mv "$DATA/dump.rdb" "$DATA/dump.rdb.before-restore-$ts"',
    'cp "$SRC" "$DATA/dump.rdb"',
    "# The throwaway server: no TCP, a socket only this user may reach, the server's AOF names, no RDB saves.",
    'cat > "$WORK/redis.conf" <<CONF',
    "port 0",
    "unixsocket $WORK/redis.sock",
    "unixsocketperm 700",
    "dir $DATA",
    "dbfilename dump.rdb",
    "appendonly yes",
    `appenddirname ${aofDir}`,
    `appendfilename ${aofFile}`,
    "aof-use-rdb-preamble yes",
    'save ""',
    "daemonize no",
    'logfile ""',
    "CONF",
    // redisRestoreFirstStartArgv: the configuration file, then --appendonly no.
    `${sh([bin.redisServer])} "$WORK/redis.conf" ${sh(redisRestoreFirstStartArgv("/", bin.redisServer).slice(2))} > "$WORK/server.log" 2>&1 &`,
    "pid=$!",
    `n=0; until [ "$(${cli} PING 2>/dev/null)" = PONG ]; do`,
    '  kill -0 "$pid" 2>/dev/null || { echo "the throwaway server stopped:" >&2; tail -n 20 "$WORK/server.log" >&2; exit 1; }',
    `  n=$((n + 1)); [ "$n" -lt $((${wait} * 5)) ] || { echo "the throwaway server did not load the snapshot within ${wait} s" >&2; exit 1; }`,
    "  sleep 0.2",
    "done",
    'grep -q "DB loaded from disk" "$WORK/server.log" || { echo "the throwaway server did not load dump.rdb:" >&2; tail -n 20 "$WORK/server.log" >&2; exit 1; }',
    `keys=$(${cli} DBSIZE)`,
    ...REDIS_RESTORE_ENABLE_AOF.map((cmd) => `[ "$(${cli} ${sh([...cmd])})" = OK ] || { echo ${shellQuote(`${cmd.join(" ")} failed`)} >&2; exit 1; }`),
    "# Done when AOF is on and no rewrite is running, scheduled or failed (INFO persistence).",
    `aof_written() { local i; i=$(${cli} INFO persistence | tr -d '\\r'); for f in aof_enabled:1 aof_rewrite_in_progress:0 aof_rewrite_scheduled:0 aof_last_bgrewrite_status:ok; do grep -qx "$f" <<< "$i" || return 1; done; }`,
    "n=0; until aof_written; do",
    `  n=$((n + 1)); [ "$n" -lt $((${wait} * 5)) ] || { echo "the AOF rewrite did not finish within ${wait} s" >&2; exit 1; }`,
    "  sleep 0.2",
    "done",
    `${cli} SHUTDOWN >/dev/null 2>&1 || true`,
    'wait "$pid" || true',
    "pid=",
    '[ -d "$DATA/$AOF_DIR" ] || { echo "no $AOF_DIR was written in $DATA" >&2; exit 1; }',
    'echo "installed $keys keys into $DATA as its AOF ($AOF_DIR); what was there before is kept as *.before-restore-$ts"',
    "",
  ].join("\n");
}
