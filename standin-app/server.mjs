// The stand-in Synaxic app: what the local fleet runs when its stack names no
// appImage of its own, so that the quick start needs no image from a registry.
// It is not the app. It reads what the program gives the app container
// (components/SynaxicApp.ts, templates/app.ts) the way the app reads it, and
// uses PostgreSQL and Redis the way the program's wiring expects:
//
//   SERVER_ADDRESS, SERVER_PORT      where it listens (default 0.0.0.0:8080)
//   SPRING_CONFIG_IMPORT             configtree:DIR (required: a missing DIR stops it,
//                                    as Spring Boot stops) or optional:configtree:DIR;
//                                    each file is the property its name gives
//   SPRING_DATASOURCE_URL            jdbc:postgresql://HOST:PORT/DB?sslmode=verify-full
//                                    &sslrootcert=PATH[&readOnly=true]
//   SPRING_DATASOURCE_USERNAME       and spring.datasource.password (config tree)
//   SPRING_DATA_REDIS_MASTER_HOST, SPRING_DATA_REDIS_PORT, SPRING_DATA_REDIS_USERNAME,
//   SPRING_DATA_REDIS_SSL_ENABLED    and spring.data.redis.password (config tree)
//   REDIS_TRUSTSTORE_PASSWORD        (config tree; default changeit, as the app's) for
//                                    the PKCS12 truststore /app/redis-tls/truststore.p12
//                                    (STANDIN_REDIS_TRUSTSTORE names another path)
//
// Environment variables win over config-tree files, as in Spring Boot.
//
//   GET  /actuator/health      {"status":"UP",...} (200) only while PostgreSQL
//                              answers with the schema in place and Redis answers
//                              PING; otherwise {"status":"DOWN",...} (503)
//   GET  /actuator/prometheus  a few metrics in the Prometheus text format
//   POST /v1/visits            counts a visit: a row in PostgreSQL and a key in
//                              Redis. On a standby the database refuses the write
//                              (SQLSTATE 25006) and the answer is a 500 naming it.
//   GET  /v1/visits            the count as this app's database and Redis see it
//   GET  /                     what this is
//
// In write mode (no readOnly=true in the JDBC URL) it creates its table itself
// once the primary answers, as the app's Flyway migrations do; in read mode it
// waits for the table to reach its standby. Nothing secret is logged.
import http from "node:http";
import process from "node:process";
import tls from "node:tls";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { Buffer } from "node:buffer";
import { setTimeout as delay } from "node:timers/promises";
import { setTimeout } from "node:timers";
import { URL, URLSearchParams } from "node:url";
import pg from "pg";
import Redis from "ioredis";
import forge from "node-forge";

const TRUSTSTORE = process.env.STANDIN_REDIS_TRUSTSTORE || "/app/redis-tls/truststore.p12";
const TABLE = "synaxic_standin_visits";
const REDIS_KEY = "synaxic:standin:visits";
const started = Date.now();

function fail(message) {
  process.stderr.write(`synaxic-standin: ${message}\n`);
  process.exit(1);
}

/**
 * The Spring config tree: every regular file in DIR is a property named after
 * the file, its content the value with one trailing newline removed (Spring
 * Boot's configtree import trims it: ConfigTreePropertySource's
 * AUTO_TRIM_TRAILING_NEW_LINE option).
 */
function readConfigTree(spec) {
  if (!spec) return {};
  const optional = spec.startsWith("optional:");
  const location = optional ? spec.slice("optional:".length) : spec;
  if (!location.startsWith("configtree:")) fail(`SPRING_CONFIG_IMPORT: only configtree:DIR is understood, got ${JSON.stringify(spec)}`);
  const dir = location.slice("configtree:".length);
  if (!existsSync(dir)) {
    if (optional) return {};
    fail(`config data location '${location}' does not exist`);
  }
  const tree = {};
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (!statSync(path).isFile()) continue;
    try {
      tree[name] = readFileSync(path, "utf8").replace(/\r?\n$/, "");
    } catch (e) {
      fail(`cannot read ${path} of the config tree: ${e.code ?? e.message}`);
    }
  }
  return tree;
}

const tree = readConfigTree(process.env.SPRING_CONFIG_IMPORT ?? "");
/** A setting: its environment variable, else the config-tree file named after the property, else one named like the variable. */
function setting(property, variable, fallback) {
  const v = process.env[variable] ?? tree[property] ?? tree[variable];
  if (v !== undefined && v !== "") return v;
  if (fallback !== undefined) return fallback;
  fail(`${property} is not set (environment variable ${variable}, or a config-tree file named ${property})`);
}

/** pgjdbc's URL, as far as the program uses it: host, port, database, sslmode, sslrootcert, readOnly. */
function parseJdbcUrl(url) {
  const m = /^jdbc:postgresql:\/\/([^/:?]+)(?::(\d+))?\/([^?]+)(?:\?(.*))?$/.exec(url);
  if (!m) fail(`SPRING_DATASOURCE_URL: expected jdbc:postgresql://HOST:PORT/DB?..., got ${JSON.stringify(url)}`);
  const params = new URLSearchParams(m[4] ?? "");
  return {
    host: m[1],
    port: Number(m[2] ?? 5432),
    database: decodeURIComponent(m[3]),
    sslmode: params.get("sslmode") ?? "prefer",
    sslrootcert: params.get("sslrootcert"),
    readOnly: params.get("readOnly") === "true",
  };
}

/**
 * TLS options that verify the server's chain against `ca` and, for
 * verify-full, that its certificate names `host` (an IP address is matched
 * against the certificate's IP SANs by Node's tls.checkServerIdentity).
 */
function verifiedTls(ca, host, checkName) {
  return {
    ca,
    rejectUnauthorized: true,
    checkServerIdentity: checkName ? (_servername, cert) => tls.checkServerIdentity(host, cert) : () => undefined,
  };
}

function postgresSsl(db) {
  switch (db.sslmode) {
    case "disable":
      return false;
    case "require":
      return { rejectUnauthorized: false };
    case "verify-ca":
    case "verify-full": {
      if (!db.sslrootcert) fail(`SPRING_DATASOURCE_URL: sslmode=${db.sslmode} needs sslrootcert`);
      let ca;
      try {
        ca = readFileSync(db.sslrootcert, "utf8");
      } catch (e) {
        fail(`cannot read the JDBC sslrootcert ${db.sslrootcert}: ${e.code ?? e.message}`);
      }
      return verifiedTls(ca, db.host, db.sslmode === "verify-full");
    }
    default:
      fail(`SPRING_DATASOURCE_URL: sslmode=${db.sslmode} is not one the stand-in understands (disable, require, verify-ca, verify-full)`);
  }
}

/**
 * The CA certificates of the PKCS12 truststore, as PEM. node-forge checks the
 * store's MAC with the password (strict mode) and decrypts its safes; it keeps
 * a certificate whose key type it does not parse itself (the fleet's ECDSA CA)
 * as ASN.1 (node-forge lib/pkcs12.js, certBag decoder), which Node reads.
 */
function truststoreCas(path, password) {
  let der;
  try {
    der = readFileSync(path);
  } catch (e) {
    fail(`cannot read the Redis truststore ${path}: ${e.code ?? e.message}`);
  }
  let p12;
  try {
    p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(der.toString("binary")), true, password);
  } catch (e) {
    fail(`the Redis truststore ${path} cannot be opened with REDIS_TRUSTSTORE_PASSWORD: ${e.message}`);
  }
  const bags = p12.getBags({ bagType: forge.pki.oids.certBag })[forge.pki.oids.certBag] ?? [];
  const pems = bags.map((bag) => {
    const asn1 = bag.cert ? forge.pki.certificateToAsn1(bag.cert) : bag.asn1;
    return new X509Certificate(Buffer.from(forge.asn1.toDer(asn1).getBytes(), "binary")).toString();
  });
  if (pems.length === 0) fail(`the Redis truststore ${path} holds no certificate`);
  return pems;
}

const listenAddress = process.env.SERVER_ADDRESS || "0.0.0.0";
const listenPort = Number(process.env.SERVER_PORT || 8080);
const db = parseJdbcUrl(setting("spring.datasource.url", "SPRING_DATASOURCE_URL"));
const mode = db.readOnly ? "read" : "write";
const pool = new pg.Pool({
  host: db.host,
  port: db.port,
  database: db.database,
  user: setting("spring.datasource.username", "SPRING_DATASOURCE_USERNAME"),
  password: setting("spring.datasource.password", "SPRING_DATASOURCE_PASSWORD"),
  ssl: postgresSsl(db),
  // pgjdbc's readOnly=true makes its transactions read-only; so does this.
  ...(db.readOnly ? { options: "-c default_transaction_read_only=on" } : {}),
  application_name: `synaxic-standin-${mode}`,
  max: 4,
  connectionTimeoutMillis: 5000,
  idleTimeoutMillis: 30000,
});
pool.on("error", (e) => process.stderr.write(`synaxic-standin: idle database connection lost: ${e.message}\n`));

const redisHost = setting("spring.data.redis.host", "SPRING_DATA_REDIS_MASTER_HOST", process.env.SPRING_DATA_REDIS_HOST);
const redisTls = setting("spring.data.redis.ssl.enabled", "SPRING_DATA_REDIS_SSL_ENABLED", "false") === "true";
const redis = new Redis({
  host: redisHost,
  port: Number(setting("spring.data.redis.port", "SPRING_DATA_REDIS_PORT", "6379")),
  username: setting("spring.data.redis.username", "SPRING_DATA_REDIS_USERNAME", "default"),
  password: setting("spring.data.redis.password", "SPRING_DATA_REDIS_PASSWORD"),
  // ioredis hands `tls` to tls.connect (lib/connectors/StandaloneConnector.ts).
  ...(redisTls ? { tls: verifiedTls(truststoreCas(TRUSTSTORE, setting("REDIS_TRUSTSTORE_PASSWORD", "REDIS_TRUSTSTORE_PASSWORD", "changeit")), redisHost, true) } : {}),
  connectTimeout: 5000,
  maxRetriesPerRequest: 1,
  // Fail a command at once while disconnected instead of queueing it: health must say DOWN.
  enableOfflineQueue: false,
  retryStrategy: (times) => Math.min(times * 200, 2000),
});
let redisError = "";
redis.on("error", (e) => {
  if (e.message !== redisError) process.stderr.write(`synaxic-standin: redis: ${e.message}\n`);
  redisError = e.message;
});
redis.on("ready", () => (redisError = ""));

const metrics = { requests: new Map(), visitsWritten: 0, writeFailures: 0, dbUp: 0, redisUp: 0 };
let schemaReady = false;

/** Write mode: create the table once the primary answers (the app's Flyway does the same at start). Read mode: wait until it reached the standby. */
async function migrate() {
  for (;;) {
    try {
      if (mode === "write") {
        await pool.query(`CREATE TABLE IF NOT EXISTS ${TABLE} (id smallint PRIMARY KEY CHECK (id = 1), count bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`);
      }
      const r = await pool.query("SELECT to_regclass($1) IS NOT NULL AS present", [TABLE]);
      if (r.rows[0].present) {
        schemaReady = true;
        process.stdout.write(`synaxic-standin: schema ${mode === "write" ? "created or current" : "present on the standby"}\n`);
        return;
      }
    } catch (e) {
      process.stderr.write(`synaxic-standin: schema: ${describe(e)}\n`);
    }
    await delay(2000);
  }
}

/** The SQLSTATE of a PostgreSQL error (five characters); a connection error's code (ECONNREFUSED...) is not one. */
function sqlState(e) {
  return typeof e.code === "string" && /^[0-9A-Z]{5}$/.test(e.code) ? e.code : undefined;
}

function describe(e) {
  return sqlState(e) ? `SQLSTATE ${sqlState(e)}: ${e.message}` : e.message;
}

function withTimeout(promise, ms, what) {
  return Promise.race([promise, delay(ms).then(() => Promise.reject(new Error(`${what} did not answer within ${ms} ms`)))]);
}

async function health() {
  const components = {};
  try {
    const r = await withTimeout(pool.query("SELECT pg_is_in_recovery() AS standby"), 3000, "PostgreSQL");
    const up = schemaReady;
    components.db = { status: up ? "UP" : "DOWN", details: { database: "PostgreSQL", standby: r.rows[0].standby, schema: schemaReady ? "current" : "missing" } };
  } catch (e) {
    components.db = { status: "DOWN", details: { error: describe(e) } };
  }
  try {
    const pong = await withTimeout(redis.ping(), 3000, "Redis");
    components.redis = { status: pong === "PONG" ? "UP" : "DOWN", details: { tls: redisTls } };
  } catch (e) {
    components.redis = { status: "DOWN", details: { error: e.message } };
  }
  metrics.dbUp = components.db.status === "UP" ? 1 : 0;
  metrics.redisUp = components.redis.status === "UP" ? 1 : 0;
  const status = metrics.dbUp && metrics.redisUp ? "UP" : "DOWN";
  return { status, components };
}

async function writeVisit() {
  const r = await pool.query(
    `INSERT INTO ${TABLE} (id, count) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET count = ${TABLE}.count + 1, updated_at = now() RETURNING count`,
  );
  const redisVisits = await redis.incr(REDIS_KEY);
  metrics.visitsWritten++;
  return { visits: Number(r.rows[0].count), redisVisits };
}

async function readVisits() {
  const r = await pool.query(`SELECT count FROM ${TABLE} WHERE id = 1`);
  const redisVisits = await redis.get(REDIS_KEY);
  return { visits: r.rows.length ? Number(r.rows[0].count) : 0, redisVisits: redisVisits === null ? 0 : Number(redisVisits) };
}

function renderMetrics() {
  const lines = [
    "# HELP synaxic_standin_info The stand-in app and its mode.",
    "# TYPE synaxic_standin_info gauge",
    `synaxic_standin_info{mode="${mode}"} 1`,
    "# HELP synaxic_standin_http_requests_total Requests answered, by method and status.",
    "# TYPE synaxic_standin_http_requests_total counter",
    ...[...metrics.requests].map(([k, n]) => {
      const [method, status] = k.split(" ");
      return `synaxic_standin_http_requests_total{method="${method}",status="${status}"} ${n}`;
    }),
    "# HELP synaxic_standin_visits_written_total Visits written to PostgreSQL and Redis.",
    "# TYPE synaxic_standin_visits_written_total counter",
    `synaxic_standin_visits_written_total ${metrics.visitsWritten}`,
    "# HELP synaxic_standin_write_failures_total Visits the database or Redis refused.",
    "# TYPE synaxic_standin_write_failures_total counter",
    `synaxic_standin_write_failures_total ${metrics.writeFailures}`,
    "# HELP synaxic_standin_component_up Whether a dependency answered at the last health check.",
    "# TYPE synaxic_standin_component_up gauge",
    `synaxic_standin_component_up{component="db"} ${metrics.dbUp}`,
    `synaxic_standin_component_up{component="redis"} ${metrics.redisUp}`,
    "# HELP process_uptime_seconds Seconds since the process started.",
    "# TYPE process_uptime_seconds gauge",
    `process_uptime_seconds ${((Date.now() - started) / 1000).toFixed(3)}`,
    "# HELP process_resident_memory_bytes Resident memory size in bytes.",
    "# TYPE process_resident_memory_bytes gauge",
    `process_resident_memory_bytes ${process.memoryUsage().rss}`,
  ];
  return `${lines.join("\n")}\n`;
}

function send(res, status, body, type = "application/json") {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  metrics.requests.set(`${res.req.method} ${status}`, (metrics.requests.get(`${res.req.method} ${status}`) ?? 0) + 1);
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  try {
    if (path === "/actuator/health" && (req.method === "GET" || req.method === "HEAD")) {
      const h = await health();
      return send(res, h.status === "UP" ? 200 : 503, h);
    }
    if (path === "/actuator/prometheus" && req.method === "GET") return send(res, 200, renderMetrics(), "text/plain; version=0.0.4; charset=utf-8");
    if (path === "/v1/visits" && req.method === "POST") {
      try {
        return send(res, 200, { mode, ...(await writeVisit()) });
      } catch (e) {
        metrics.writeFailures++;
        return send(res, 500, { mode, error: e.message, ...(sqlState(e) ? { sqlState: sqlState(e) } : {}) });
      }
    }
    if (path === "/v1/visits" && req.method === "GET") return send(res, 200, { mode, ...(await readVisits()) });
    if (path === "/" && req.method === "GET") {
      return send(res, 200, { app: "synaxic-standin", mode, note: "A stand-in for the Synaxic app. POST /v1/visits counts a visit; GET /v1/visits reads the count." });
    }
    return send(res, 404, { error: "not found" });
  } catch (e) {
    return send(res, 500, { mode, error: e.message, ...(sqlState(e) ? { sqlState: sqlState(e) } : {}) });
  }
});

server.listen(listenPort, listenAddress, () => {
  process.stdout.write(`synaxic-standin: ${mode} mode, listening on ${listenAddress}:${listenPort}\n`);
});
migrate();

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    Promise.allSettled([pool.end(), redis.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  });
}
