/**
 * Redis configuration for Synaxic (Redis 7.0 and 8): the master on the main VPS and one
 * replica per replica VPS, TLS only, users from an ACL file.
 *
 * Pure functions from typed parameters to file text; nothing here touches
 * Pulumi, the network or the disk. Every value a caller supplies is checked
 * and quoted for the Redis config parser, so a bad parameter fails at render
 * time with a message that names it instead of when Redis starts.
 */
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import { sh } from "../lib/shell";

/** The TLS port the app, the replicas and the exporter use. */
export const REDIS_TLS_PORT = 6380;

/** Where the files live inside the Redis container. */
export const REDIS_CONTAINER_PATHS = {
  conf: "/etc/synaxic/redis.conf",
  acl: "/etc/synaxic/users.acl",
  tlsDir: "/etc/synaxic/tls",
  certFile: "/etc/synaxic/tls/redis.crt",
  keyFile: "/etc/synaxic/tls/redis.key",
  caFile: "/etc/synaxic/tls/ca.crt",
  dataDir: "/data",
} as const;

/** Uid/gid of the `redis` user in the official redis:7.0.15-bookworm image. */
export const REDIS_CONTAINER_UID = 999;
export const REDIS_CONTAINER_GID = 999;

export interface RedisTlsFiles {
  /** Server certificate (PEM); also presented as client certificate when a replica connects to its master. */
  certFile: string;
  keyFile: string;
  /** CA that signed every Redis certificate: verifies the master (on replicas) and any client certificate offered. */
  caFile: string;
}

interface RedisConfCommon {
  /** Addresses to listen on (IPv4 or IPv6 literals), e.g. ["0.0.0.0"] inside a container. */
  bind: readonly string[];
  /** TLS port; default 6380. The plain-text port is always off. */
  port?: number;
  tls?: RedisTlsFiles;
  aclFile?: string;
  dataDir?: string;
  /**
   * Address and port this server announces to its master (INFO replication,
   * ROLE): the VPS address a replica is reachable at from outside its
   * container. Rendered only when given.
   */
  announce?: { ip: string; port?: number };
  /**
   * Replication backlog the master keeps for partial resyncs, in Redis size
   * notation ("64mb"). It must hold every write made while a replica is cut
   * off; default 64mb (about a minute at 1 MB/s of writes).
   */
  replBacklogSize?: string;
  /**
   * Seconds the master waits for more replicas before it starts a diskless
   * full sync (repl-diskless-sync-delay); default 0 for this fleet, see
   * REDIS_CONF_DEFAULTS.replDisklessSyncDelay. Read by a master only, and
   * rendered for replicas too so that a promoted one behaves the same.
   */
  replDisklessSyncDelay?: number;
  /** Seconds between the master's pings to its replicas; default 10. */
  replPingReplicaPeriod?: number;
  /** Seconds without traffic after which a replication link counts as broken; default 60. Must exceed the ping period. */
  replTimeout?: number;
  /** Memory limit in Redis size notation; unlimited when absent. At it, keys with a TTL are evicted (volatile-lru). */
  maxmemory?: string;
  /**
   * Milliseconds a script may run before the server answers other clients
   * with BUSY and accepts SCRIPT KILL (busy-reply-threshold); default 1000,
   * see REDIS_CONF_DEFAULTS.busyReplyThresholdMs. From 100 to 60000.
   */
  busyReplyThresholdMs?: number;
}

export interface RedisMasterConfParams extends RedisConfCommon {
  role: "master";
}

export interface RedisReplicaConfParams extends RedisConfCommon {
  role: "replica";
  /** The master's address as the replica reaches it; must be named in the master certificate's SANs. */
  masterHost: string;
  /** The master's TLS port; default 6380. */
  masterPort?: number;
  /** ACL user the replica authenticates as (see renderRedisAcl's `replication` user). */
  masterUser: string;
  masterPassword: string;
}

export type RedisConfParams = RedisMasterConfParams | RedisReplicaConfParams;

export interface RedisAclUser {
  name: string;
  /** Plain-text password; only its SHA-256 is written to the ACL file. */
  password: string;
}

export interface RedisAclParams {
  /** The Synaxic app: every key and channel, the command groups it uses (REDIS_ACL_RULES.app). */
  app: RedisAclUser;
  /** Replicas connecting to the master: PSYNC/REPLCONF/PING only. */
  replication: RedisAclUser;
  /** redis_exporter: INFO, PING, CLIENT SETNAME. */
  exporter: RedisAclUser;
  /** Optional operator user with every command (promotion, repointing, ACL LOG). */
  admin?: RedisAclUser;
}

export interface RedisCliTarget {
  /** Address redis-cli connects to; default 127.0.0.1 (inside the container). */
  host?: string;
  port?: number;
  caFile?: string;
  /** ACL user allowed to run REPLICAOF (the `admin` user of renderRedisAcl). */
  user: string;
}

/**
 * Rules of each ACL user after "reset on #<hash>" (reset: no keys, no
 * channels, no commands), exported so tests and docs can refer to them.
 */
export const REDIS_ACL_RULES = {
  // Off, with no password: no connection can authenticate as it. Its
  // permissions are nonetheless everything, because Redis replays the AOF
  // as this user and re-checks a transaction's commands against it at EXEC:
  // with -@all every MULTI/EXEC block (and every script's writes, which
  // Redis 7 propagates as one) is silently dropped on restart
  // (redis/redis#14541, fixed by #14545 after the 7.0 series; valkey#3983).
  default: ["off", "resetpass", "~*", "&*", "+@all"],
  // What a Redis 7.0 replica sends to its master (syncWithMaster in
  // src/replication.c of redis/redis 7.0.15): PING, AUTH, REPLCONF
  // listening-port / ip-address / capa, then PSYNC; afterwards REPLCONF ACK
  // once a second. AUTH needs no permission. No key or channel access: the
  // replication stream itself is not subject to key permissions.
  replication: ["-@all", "+psync", "+replconf", "+ping"],
  // The app's Redis traffic, read from its code (Skillter/SynaxicAPI: Spring
  // Session's RedisSessionRepository, Redisson 4.0 RMapCache caches behind
  // RedissonSpringCacheManager, RTopic cache invalidation, RAtomicLong
  // daily counters, Bucket4j 8.15 Redisson CAS rate limits) and from those
  // libraries' sources; APP_REDIS_COMMANDS lists every command with where it
  // comes from. Redis 7 checks a script's redis.call()s against the caller's
  // ACL as well, so the groups cover the commands inside Redisson's and
  // Bucket4j's Lua scripts too. The data types are strings, hashes and
  // sorted sets only: no lists, sets, streams, geo, bitmaps or
  // HyperLogLogs.
  //
  // -@dangerous then takes away FLUSHALL, FLUSHDB, KEYS, CONFIG, DEBUG,
  // SHUTDOWN, MONITOR, REPLICAOF, ACL, MIGRATE, SORT, CLIENT KILL/LIST/PAUSE,
  // SWAPDB, RESTORE...; INFO is given back because Spring Boot's Redis health
  // indicator and Redisson (RMapCache listeners: INFO server) run it.
  // Scripting stays for EVAL/EVALSHA (Redisson runs every script as EVALSHA
  // and sends SCRIPT LOAD on NOSCRIPT: useScriptCache is on by default in
  // Redisson 4) and their _RO forms. Not the app's, so denied: FUNCTION and
  // FCALL (code that outlives the caller), SCRIPT FLUSH and KILL (other
  // clients' scripts), SCRIPT DEBUG (its SYNC mode stops the server while a
  // script is being debugged), SELECT, MOVE, COPY (other databases: the app
  // uses database 0, and Redisson sends SELECT only for a database other
  // than 0), DUMP and RESTORE (values copied out and in wholesale).
  app: [
    "~*", "&*",
    "+@string", "+@hash", "+@sortedset", "+@keyspace", "+@pubsub", "+@scripting", "+@transaction", "+@connection",
    "-@dangerous", "+info",
    "-function", "-fcall", "-fcall_ro", "-script|flush", "-script|kill", "-script|debug", "-select", "-move", "-copy", "-swapdb", "-dump", "-restore",
  ],
  // What redis_exporter 1.45 sends per scrape (scrapeRedisHost in
  // exporter/exporter.go of oliver006/redis_exporter v1.45.0): CLIENT SETNAME,
  // <config-command> GET *, INFO ALL, LATENCY LATEST, SLOWLOG LEN, SLOWLOG GET 1
  // (PING only with --ping-on-connect). Only INFO feeds the metrics the alert
  // rules use. SLOWLOG GET shows other clients' commands with their
  // arguments, and neither SLOWLOG nor LATENCY is needed: a refused SLOWLOG
  // is skipped without an error (exporter/slowlog.go), a refused LATENCY
  // LATEST is logged once per exporter process and skipped
  // (exporter/latency.go); the latency monitor is off here anyway
  // (latency-monitor-threshold 0), so it would report nothing. CONFIG GET
  // would reveal masterauth (the replication password) on replicas: run the
  // exporter with --config-command=- (REDIS_EXPORTER_CONFIG_COMMAND=-), which
  // sends a command Redis does not know instead. redis_exporter 1.86 (the
  // default image) sends the same per scrape (CLUSTER INFO only when INFO
  // says cluster_enabled:1), and finds its password under the address with
  // the user in it (components/Exporters.ts, redisExporterPasswordMap).
  exporter: ["-@all", "+info", "+ping", "+client|setname"],
  admin: ["~*", "&*", "+@all"],
} as const;

/** One command the app sends (or runs inside a script), with an example argv and where it comes from. */
export interface AppRedisCommand {
  argv: readonly string[];
  /** The library (and class or file) that sends it, at the version the app uses. */
  source: string;
  /** true: run by redis.call() inside one of the library's Lua scripts; Redis 7 checks it against the caller's ACL too. */
  inScript?: boolean;
}

const SESSION = "Spring Session 3.5.2 RedisSessionRepository";
const REDISSON = "Redisson 4.0.0";
const MAP_CACHE = `${REDISSON} RedissonMapCache / MapCacheEvictionTask scripts (Spring caches with a TTL)`;
const BUCKET4J = "Bucket4j 8.15 RedissonBasedProxyManager (CAS rate limits)";

/**
 * The commands the app sends to Redis, from its code and its libraries'
 * sources (see REDIS_ACL_RULES.app). The integration test asks the server
 * (ACL DRYRUN) that the app user may run each of them, and runs the app's
 * operations for real.
 */
export const APP_REDIS_COMMANDS: readonly AppRedisCommand[] = [
  // Every connection: BaseConnectionHandler.channelActive.
  { argv: ["PING"], source: `${REDISSON} BaseConnectionHandler (ping-connection-interval)` },
  { argv: ["CLIENT", "SETNAME", "synaxic"], source: `${REDISSON} BaseConnectionHandler (when a client name is set)` },
  // Scripts: CommandAsyncService.evalAsync (useScriptCache, on by default).
  { argv: ["EVALSHA", "0000000000000000000000000000000000000000", "1", "k"], source: `${REDISSON} CommandAsyncService` },
  { argv: ["EVALSHA_RO", "0000000000000000000000000000000000000000", "1", "k"], source: `${REDISSON} CommandAsyncService (read-only scripts)` },
  { argv: ["SCRIPT", "LOAD", "return 1"], source: `${REDISSON} CommandAsyncService (after NOSCRIPT)` },
  { argv: ["EVAL", "return 1", "0"], source: `${REDISSON} (useScriptCache off)` },
  { argv: ["EVAL_RO", "return 1", "0"], source: `${REDISSON} (useScriptCache off, read-only scripts)` },
  // Health: Spring Boot's RedisHealthIndicator; RMapCache listeners read the server's OS.
  { argv: ["INFO", "server"], source: "Spring Boot RedisHealthIndicator; Redisson RedissonMapCache.addListener" },
  // Sessions.
  { argv: ["HMSET", "spring:session:sessions:s1", "lastAccessedTime", "1"], source: SESSION },
  { argv: ["HGETALL", "spring:session:sessions:s1"], source: SESSION },
  { argv: ["EXISTS", "spring:session:sessions:s1"], source: SESSION },
  { argv: ["PEXPIREAT", "spring:session:sessions:s1", "4102444800000"], source: SESSION },
  { argv: ["EXPIREAT", "spring:session:sessions:s1", "4102444800"], source: SESSION },
  { argv: ["RENAME", "spring:session:sessions:s1", "spring:session:sessions:s2"], source: `${SESSION} (changeSessionId)` },
  { argv: ["DEL", "spring:session:sessions:s2"], source: SESSION },
  // Daily request counters: RAtomicLong incrementAndGet, get, expireAsync.
  { argv: ["INCR", "synaxic:daily_requests:2025-01-01"], source: `${REDISSON} RedissonAtomicLong` },
  { argv: ["GET", "synaxic:daily_requests:2025-01-01"], source: `${REDISSON} RedissonAtomicLong` },
  { argv: ["PEXPIRE", "synaxic:daily_requests:2025-01-01", "604800000"], source: `${REDISSON} RedissonExpirable.expireAsync`, inScript: true },
  // Cache invalidation: RTopic.
  { argv: ["PUBLISH", "cache-invalidation", "x"], source: `${REDISSON} RedissonTopic` },
  { argv: ["SUBSCRIBE", "cache-invalidation"], source: `${REDISSON} PubSubConnectionPool / RedissonTopic` },
  { argv: ["UNSUBSCRIBE", "cache-invalidation"], source: `${REDISSON} PublishSubscribeService` },
  { argv: ["PUBSUB", "NUMSUB", "cache-invalidation"], source: `${REDISSON} RedissonTopic.countSubscribers` },
  // Caches with a TTL: RMapCache (hash of entries, sorted sets of expiry times).
  ...[
    ["HGET", "c", "f"], ["HSET", "c", "f", "v"], ["HSETNX", "c", "f", "v"], ["HDEL", "c", "f"], ["HGETALL", "c"], ["HLEN", "c"],
    ["HMGET", "c", "f"], ["HSCAN", "c", "0"], ["HEXISTS", "c", "f"], ["HVALS", "c"], ["HINCRBYFLOAT", "c", "n", "1"],
    ["ZADD", "t", "1", "f"], ["ZREM", "t", "f"], ["ZSCORE", "t", "f"], ["ZRANGE", "t", "0", "-1"], ["ZINCRBY", "t", "1", "f"],
    ["ZRANGEBYSCORE", "t", "0", "1", "LIMIT", "0", "100"], ["PERSIST", "c"], ["PEXPIREAT", "c", "4102444800000"],
    ["SETNX", "lock", "1"], ["EXPIRE", "lock", "10"], ["PUBLISH", "redisson_map_cache_expired:{c}", "x"],
  ].map((argv) => ({ argv, source: MAP_CACHE, inScript: true })),
  { argv: ["HLEN", "c"], source: `${REDISSON} MapCacheEvictionTask` },
  { argv: ["DEL", "c"], source: `${REDISSON} RedissonObject.delete (cache clear)` },
  // Rate limits.
  { argv: ["GET", "rate:k"], source: BUCKET4J },
  { argv: ["SET", "rate:k", "state", "PX", "60000", "NX"], source: BUCKET4J },
  { argv: ["GET", "rate:k"], source: `${BUCKET4J} compare-and-swap script`, inScript: true },
  { argv: ["PSETEX", "rate:k", "60000", "state"], source: `${BUCKET4J} compare-and-swap script`, inScript: true },
  { argv: ["SET", "rate:k", "state"], source: `${BUCKET4J} compare-and-swap script`, inScript: true },
  { argv: ["DEL", "rate:k"], source: `${BUCKET4J} removeProxy` },
];

/** The defaults renderRedisConf applies, exported for callers and tests. */
export const REDIS_CONF_DEFAULTS = {
  replBacklogSize: "64mb",
  /**
   * 0: a full sync starts as soon as a replica asks for it. Redis 7.0's
   * redis.conf on the setting: the master waits "in order to spawn the child
   * that transfers the RDB via socket to the replicas. This is important
   * since once the transfer starts, it is not possible to serve new replicas
   * arriving, that will be queued for the next RDB transfer, so the server
   * waits a delay in order to let more replicas arrive. [...] To disable it
   * entirely just set it to 0 seconds and the transfer will start ASAP."
   * (Redis's default is 5.) repl-diskless-sync-max-replicas would cut a
   * delay short "if the maximum number of replicas expected have connected";
   * at 1 that is the same as no delay, and its default 0 "means that the
   * maximum is not defined and Redis will wait the full delay". Quoted from
   * redis.conf of Redis 7.0 (redis/redis); Redis 8's says the same.
   *
   * The delay only pays off when several replicas ask for a full sync within
   * it. Here replicas join one at a time (each replica host is its own stack,
   * brought up after main), so nobody arrives to share the transfer and the
   * delay is pure waiting (bench/redis-sync.ts, 2 cores: a new replica of
   * 250 MB is in sync after 6.3-7.4 s with 5, of which the master waits
   * 4.6-5.4 s, and after 1.7-1.9 s with 0). What 0 gives up: when several
   * replicas need a full sync at the same moment, each gets a transfer of
   * its own, one after the other, instead of one shared transfer after the
   * delay.
   */
  replDisklessSyncDelay: 0,
  replPingReplicaPeriod: 10,
  replTimeout: 60,
  /**
   * 1000 ms instead of Redis's 5000. Redis runs a script to its end without
   * serving anyone else; only after busy-reply-threshold does it process
   * other connections again, answering most commands with BUSY and accepting
   * the few flagged allow-busy: AUTH, SCRIPT KILL, SHUTDOWN NOSAVE
   * (processCommand in src/server.c and the "NON-DETERMINISTIC LONG BLOCKING
   * COMMANDS" section of redis.conf, Redis 7.0). So the threshold bounds how
   * long a runaway script (a Lua loop) stalls every client before they get
   * an error and the admin user can SCRIPT KILL it. Redis 7.0 never stops a
   * script by itself, and 0 would mean no one can ever interrupt it.
   *
   * The app's scripts (Bucket4j's compare-and-swap, Redisson's map cache and
   * eviction scripts) touch a handful of keys and run in well under a
   * millisecond; 1000 ms also stays below the app's Redisson response
   * timeout (spring.redisson.timeout=3000), so a stalled server answers BUSY
   * (which Redisson retries) before the app gives up on a command. A script
   * that already wrote cannot be killed (UNKILLABLE): then SHUTDOWN NOSAVE is
   * the only way out, see docs/operations.md.
   */
  busyReplyThresholdMs: 1000,
} as const;

const DEFAULTS = REDIS_CONF_DEFAULTS;

/** TLS 1.2 suites offered (TLS 1.3 suites are OpenSSL's defaults): ECDHE with AEAD only. */
const TLS12_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

// ---------------------------------------------------------------------------
// Quoting and validation

const BARE = /^[A-Za-z0-9_.:/@%+=,|-]+$/;

/**
 * Quotes one argument for redis.conf (and the ACL file), whose lines are split
 * like sdssplitargs: a word that is safe stays bare, anything else becomes a
 * double-quoted string with \\, \" and non-printable bytes (\xHH) escaped.
 */
export function redisConfQuote(value: string): string {
  if (value !== "" && BARE.test(value)) return value;
  let out = '"';
  for (const byte of Buffer.from(value, "utf8")) {
    if (byte === 0x5c) out += "\\\\";
    else if (byte === 0x22) out += '\\"';
    else if (byte === 0x0a) out += "\\n";
    else if (byte === 0x0d) out += "\\r";
    else if (byte === 0x09) out += "\\t";
    else if (byte >= 0x20 && byte < 0x7f) out += String.fromCharCode(byte);
    else out += `\\x${byte.toString(16).padStart(2, "0")}`;
  }
  return `${out}"`;
}

function line(directive: string, ...args: (string | number)[]): string {
  return [directive, ...args.map((a) => (typeof a === "number" ? String(a) : redisConfQuote(a)))].join(" ");
}

class RedisTemplateError extends Error {
  constructor(fn: string, message: string) {
    super(`${fn}: ${message}`);
    this.name = "RedisTemplateError";
  }
}

function checkPort(fn: string, what: string, port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RedisTemplateError(fn, `${what} must be an integer from 1 to 65535, got ${String(port)}`);
  }
  return port;
}

function checkIp(fn: string, what: string, addr: string): string {
  if (isIP(addr) === 0) throw new RedisTemplateError(fn, `${what} must be an IPv4 or IPv6 address, got ${JSON.stringify(addr)}`);
  return addr;
}

const HOSTNAME = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function checkHost(fn: string, what: string, host: string): string {
  if (isIP(host) !== 0 || HOSTNAME.test(host)) return host;
  throw new RedisTemplateError(fn, `${what} must be an IP address or a DNS name, got ${JSON.stringify(host)}`);
}

function checkPath(fn: string, what: string, path: string): string {
  if (!path.startsWith("/") || /[\0\n\r]/.test(path)) {
    throw new RedisTemplateError(fn, `${what} must be an absolute path without control characters, got ${JSON.stringify(path)}`);
  }
  return path;
}

function checkSize(fn: string, what: string, size: string): string {
  if (!/^[1-9][0-9]*(b|k|kb|m|mb|g|gb)?$/i.test(size)) {
    throw new RedisTemplateError(fn, `${what} must be a Redis size like "64mb", got ${JSON.stringify(size)}`);
  }
  return size.toLowerCase();
}

function checkSeconds(fn: string, what: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min || value > 86_400) {
    throw new RedisTemplateError(fn, `${what} must be a whole number of seconds from ${min} to 86400, got ${String(value)}`);
  }
  return value;
}

const USERNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function checkUser(fn: string, what: string, name: string): string {
  if (!USERNAME.test(name)) {
    throw new RedisTemplateError(fn, `${what} must be 1-64 characters of letters, digits, "_", "." or "-", got ${JSON.stringify(name)}`);
  }
  if (name === "default") throw new RedisTemplateError(fn, `${what} must not be "default" (that user is switched off)`);
  return name;
}

function checkPassword(fn: string, what: string, password: string): string {
  if (typeof password !== "string" || password.length < 16) {
    throw new RedisTemplateError(fn, `${what} must be at least 16 characters long`);
  }
  if (/[\0\r\n]/.test(password)) throw new RedisTemplateError(fn, `${what} must not contain NUL or line breaks`);
  return password;
}

/** The ACL file's form of a password: "#" and its SHA-256 in hex. */
export function redisAclPasswordHash(password: string): string {
  return `#${createHash("sha256").update(password, "utf8").digest("hex")}`;
}

// ---------------------------------------------------------------------------
// redis.conf

/** Renders redis.conf for the master or a replica: TLS only on `port`, ACL file users, AOF persistence. */
export function renderRedisConf(params: RedisConfParams): string {
  const fn = "renderRedisConf";
  if (params.role !== "master" && params.role !== "replica") {
    throw new RedisTemplateError(fn, `role must be "master" or "replica", got ${JSON.stringify((params as { role: unknown }).role)}`);
  }
  if (!Array.isArray(params.bind) || params.bind.length === 0) throw new RedisTemplateError(fn, "bind must list at least one address");
  const bind = params.bind.map((a, i) => checkIp(fn, `bind[${i}]`, a));
  if (new Set(bind).size !== bind.length) throw new RedisTemplateError(fn, `bind lists an address twice: ${bind.join(", ")}`);
  const port = checkPort(fn, "port", params.port ?? REDIS_TLS_PORT);
  const tls = params.tls ?? REDIS_CONTAINER_PATHS;
  const certFile = checkPath(fn, "tls.certFile", tls.certFile);
  const keyFile = checkPath(fn, "tls.keyFile", tls.keyFile);
  const caFile = checkPath(fn, "tls.caFile", tls.caFile);
  const aclFile = checkPath(fn, "aclFile", params.aclFile ?? REDIS_CONTAINER_PATHS.acl);
  const dataDir = checkPath(fn, "dataDir", params.dataDir ?? REDIS_CONTAINER_PATHS.dataDir);
  const backlog = checkSize(fn, "replBacklogSize", params.replBacklogSize ?? DEFAULTS.replBacklogSize);
  const disklessDelay = checkSeconds(fn, "replDisklessSyncDelay", params.replDisklessSyncDelay ?? DEFAULTS.replDisklessSyncDelay, 0);
  const pingPeriod = checkSeconds(fn, "replPingReplicaPeriod", params.replPingReplicaPeriod ?? DEFAULTS.replPingReplicaPeriod, 1);
  const replTimeout = checkSeconds(fn, "replTimeout", params.replTimeout ?? DEFAULTS.replTimeout, 1);
  const busyReplyThreshold = params.busyReplyThresholdMs ?? DEFAULTS.busyReplyThresholdMs;
  if (!Number.isInteger(busyReplyThreshold) || busyReplyThreshold < 100 || busyReplyThreshold > 60_000) {
    throw new RedisTemplateError(
      fn,
      `busyReplyThresholdMs must be a whole number of milliseconds from 100 to 60000, got ${String(busyReplyThreshold)} (0 would let a script run uninterruptible)`,
    );
  }
  if (replTimeout <= pingPeriod) {
    throw new RedisTemplateError(fn, `replTimeout (${replTimeout}s) must be greater than replPingReplicaPeriod (${pingPeriod}s), or idle links time out`);
  }

  // Why client certificates stay optional, replication included. Redis has
  // one tls-auth-clients setting for every connection accepted on its TLS
  // port: connCreateAcceptedTLS (redis/redis src/tls.c) applies
  // server.tls_auth_clients to each, "yes" as SSL_VERIFY_PEER |
  // SSL_VERIFY_FAIL_IF_NO_PEER_CERT, "optional" as SSL_VERIFY_PEER alone
  // (redis.conf: "client certificates are accepted and must be valid if
  // provided, but are not required"). Nothing narrows "yes" to the
  // replication user, and the app (Redisson, single server) presents no
  // client certificate (its contract gives it a truststore and a password
  // only), so "yes" would lock the app out. The master therefore admits a
  // replica by its ACL user (replication commands only, REDIS_ACL_RULES)
  // and refuses at the handshake any certificate offered that does not
  // chain to this server's tls-ca-cert-file, the Redis CA alone
  // (components/Pki.ts). The other direction needs no host name: with
  // tls-replication the replica verifies the master's certificate against
  // the same file (createSSLContext sets SSL_VERIFY_PEER, connTLSConnect
  // sets only SNI, no host check), so only a Redis-CA certificate opens it.
  const out: string[] = [
    `# Redis ${params.role} for Synaxic. Rendered by templates/redis.ts; edits are overwritten.`,
    "",
    "# --- network: TLS only",
    line("bind", ...bind),
    "protected-mode yes",
    "port 0",
    line("tls-port", port),
    "tcp-keepalive 60",
    "timeout 0",
    "",
    "# --- TLS",
    line("tls-cert-file", certFile),
    line("tls-key-file", keyFile),
    line("tls-ca-cert-file", caFile),
    "# Clients authenticate with ACL passwords; a client certificate is verified",
    "# against the CA when one is offered but not required (the app has none).",
    "tls-auth-clients optional",
    line("tls-protocols", "TLSv1.2 TLSv1.3"),
    line("tls-ciphers", TLS12_CIPHERS),
    "tls-prefer-server-ciphers yes",
    "# Replication links (to this server's master, now or after a REPLICAOF) use TLS.",
    "tls-replication yes",
    "",
    "# --- users",
    line("aclfile", aclFile),
    "enable-protected-configs no",
    "enable-debug-command no",
    "enable-module-command no",
    "",
    "# --- persistence: AOF, fsync every second; no RDB save points",
    line("dir", dataDir),
    "appendonly yes",
    line("appendfilename", "appendonly.aof"),
    line("appenddirname", "appendonlydir"),
    "appendfsync everysec",
    "aof-use-rdb-preamble yes",
    line("save", ""),
    "",
    "# --- replication",
    line("repl-backlog-size", backlog),
    "repl-backlog-ttl 3600",
    "repl-diskless-sync yes",
    line("repl-diskless-sync-delay", disklessDelay),
    "repl-diskless-load disabled",
    line("repl-ping-replica-period", pingPeriod),
    line("repl-timeout", replTimeout),
  ];

  if (params.announce) {
    out.push(line("replica-announce-ip", checkHost(fn, "announce.ip", params.announce.ip)));
    if (params.announce.port !== undefined) out.push(line("replica-announce-port", checkPort(fn, "announce.port", params.announce.port)));
  }

  if (params.role === "replica") {
    const masterHost = checkHost(fn, "masterHost", params.masterHost);
    const masterPort = checkPort(fn, "masterPort", params.masterPort ?? REDIS_TLS_PORT);
    const masterUser = checkUser(fn, "masterUser", params.masterUser);
    const masterPassword = checkPassword(fn, "masterPassword", params.masterPassword);
    out.push(
      line("replicaof", masterHost, masterPort),
      line("masteruser", masterUser),
      line("masterauth", masterPassword),
      "replica-read-only yes",
      "replica-serve-stale-data yes",
    );
  }

  out.push(
    "",
    "# --- limits and logging",
    "# A script running longer than this gets BUSY replies sent to other clients",
    "# and can be stopped with SCRIPT KILL by the admin user.",
    line("busy-reply-threshold", busyReplyThreshold),
  );
  if (params.maxmemory !== undefined) {
    // At the limit, evict among the keys that expire anyway (sessions, rate
    // limit windows, caches), least recently used first, so that Redis
    // keeps serving writes; keys without a TTL are never evicted. With
    // noeviction every write would fail with OOM once the limit is reached.
    out.push(line("maxmemory", checkSize(fn, "maxmemory", params.maxmemory)), "maxmemory-policy volatile-lru");
  }
  out.push("daemonize no", 'logfile ""', "loglevel notice", "");
  return out.join("\n");
}

// ---------------------------------------------------------------------------
// users.acl

/** Renders the ACL file: default user off; app, replication, exporter (and optional admin) users with hashed passwords. */
export function renderRedisAcl(params: RedisAclParams): string {
  const fn = "renderRedisAcl";
  const entries: [keyof typeof REDIS_ACL_RULES, RedisAclUser | undefined][] = [
    ["app", params.app],
    ["replication", params.replication],
    ["exporter", params.exporter],
    ["admin", params.admin],
  ];
  const seen = new Map<string, string>();
  // Every word here is a constant rule, a checked user name or a hex hash, so
  // none needs quoting.
  const out = [["user", "default", ...REDIS_ACL_RULES.default].join(" ")];
  for (const [role, user] of entries) {
    if (user === undefined) {
      if (role === "admin") continue;
      throw new RedisTemplateError(fn, `the ${role} user is required`);
    }
    const name = checkUser(fn, `${role}.name`, user.name);
    checkPassword(fn, `${role}.password`, user.password);
    const other = seen.get(name);
    if (other) throw new RedisTemplateError(fn, `the ${role} and ${other} users are both named ${JSON.stringify(name)}`);
    seen.set(name, role);
    out.push(["user", name, "reset", "on", redisAclPasswordHash(user.password), ...REDIS_ACL_RULES[role]].join(" "));
  }
  return `${out.join("\n")}\n`;
}

// ---------------------------------------------------------------------------
// promotion

/** Commands that turn a replica into a master, keeping its data. */
export function renderRedisPromoteCommands(): string[][] {
  return [["REPLICAOF", "NO", "ONE"]];
}

/** Commands that point a server at a (new) master. */
export function renderRedisReplicaOfCommands(masterHost: string, masterPort: number = REDIS_TLS_PORT): string[][] {
  const fn = "renderRedisReplicaOfCommands";
  return [["REPLICAOF", checkHost(fn, "masterHost", masterHost), String(checkPort(fn, "masterPort", masterPort))]];
}

/**
 * A POSIX sh script that promotes the replica it runs next to: REPLICAOF NO
 * ONE over TLS, then checks that ROLE says master. The password of `user`
 * comes from the REDISCLI_AUTH environment variable, never the command line.
 * After it succeeds the server's redis.conf must be rendered as a master
 * (renderRedisConf role "master"), or a restart makes it a replica again.
 */
export function renderRedisPromoteScript(target: RedisCliTarget): string {
  const fn = "renderRedisPromoteScript";
  const host = checkHost(fn, "host", target.host ?? "127.0.0.1");
  const port = checkPort(fn, "port", target.port ?? REDIS_TLS_PORT);
  const caFile = checkPath(fn, "caFile", target.caFile ?? REDIS_CONTAINER_PATHS.caFile);
  const user = checkUser(fn, "user", target.user);
  const cli = ["redis-cli", "--tls", "--cacert", caFile, "-h", host, "-p", String(port), "--user", user, "--no-auth-warning"];
  const commands = renderRedisPromoteCommands()
    .map((argv) => [`out=$(cli ${sh(argv)})`, `[ "$out" = OK ] || { echo ${sh([`${argv.join(" ")} failed:`])} "$out" >&2; exit 1; }`])
    .flat();
  return [
    "#!/bin/sh",
    "# Promotes this Redis replica to master. Rendered by templates/redis.ts.",
    "set -eu",
    `: "\${REDISCLI_AUTH:?set REDISCLI_AUTH to the password of Redis user ${user}}"`,
    "export REDISCLI_AUTH",
    `cli() { ${sh(cli)} "$@"; }`,
    ...commands,
    "role=$(cli ROLE | head -n 1)",
    `[ "$role" = master ] || { echo "ROLE is $role after promotion" >&2; exit 1; }`,
    "echo promoted",
    "",
  ].join("\n");
}

/**
 * The promotion as the deployment runs it inside the replica's container:
 * the admin password is the first line of standard input, so it is never in
 * an argv, `docker exec -e` or a log.
 */
export function renderRedisPromoteFromStdin(target: RedisCliTarget): string {
  return `read -r REDISCLI_AUTH; export REDISCLI_AUTH\n${renderRedisPromoteScript(target)}`;
}
