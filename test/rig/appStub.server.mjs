// A stand-in for the Synaxic app in integration tests (started with plain
// `node`, no build step). Usage:
//
//   node appStub.server.mjs --name replica1 --listen 10.213.1.2:8080 --journal /dir/replica1.jsonl
//
//   GET /actuator/health      -> {"status":"UP"}
//   GET /actuator/prometheus  -> a few metrics in the Prometheus text format
//   GET /__stub/stats         -> request counts (control endpoint, not counted)
//   POST /__stub/reset        -> zero the counts
//   /hang...                  -> never answers (the test kills the process meanwhile)
//   anything else             -> JSON saying which host answered and whether the method was a write
//
// With --psql PATH --conninfo STR it also writes to PostgreSQL where the real
// app does on requests that read (its one datasource: the primary in write
// mode, the local standby in read mode, where every write fails with SQLSTATE
// 25006):
//   GET /login/oauth2/code/google?code=C -> creates user C (app_users), as the
//       Google login callback creates the user; 500 with the SQLSTATE when the
//       insert fails
//   any request with an API key (Authorization "ApiKey K", a bare
//       "syn_live_..."/"syn_test_...", or X-API-Key, as the app reads them) ->
//       answered at once; the key's usage is counted afterwards
//       (api_key_usage), and a failure is only logged and counted, as the
//       app's asynchronous usage recording does
//
// A request with an `x-stub-delay-ms` header is answered that much later.
// Every request carrying an `x-test-id` header is appended to the journal file
// synchronously on arrival, before anything else happens, so the journal
// survives the process being killed mid-request.
import http from "node:http";
import process from "node:process";
import { appendFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { spawn } from "node:child_process";
import { Buffer } from "node:buffer";
import { URL } from "node:url";
import { setInterval, setTimeout } from "node:timers";

const READ_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) {
    if (fallback === undefined) throw new Error(`appStub: --${name} is required`);
    return fallback;
  }
  return process.argv[i + 1];
}

const name = arg("name");
const listen = arg("listen");
const journal = arg("journal", "");
const psqlBin = arg("psql", "");
const conninfo = arg("conninfo", "");
const sep = listen.lastIndexOf(":");
const listenHost = listen.slice(0, sep).replace(/^\[|\]$/g, "");
const listenPort = Number(listen.slice(sep + 1));
const startedAt = Date.now() / 1000;

let counts;
function resetCounts() {
  counts = { read: 0, write: 0, byMethod: {}, health: 0, metrics: 0, usageRecorded: 0, usageFailures: 0, usagePending: 0 };
}
resetCounts();

function send(res, status, body, headers = {}) {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": typeof body === "string" ? "text/plain; charset=utf-8" : "application/json",
    "content-length": Buffer.byteLength(text),
    "x-served-by": name,
    ...headers,
  });
  res.end(res.req.method === "HEAD" ? undefined : text);
}

function metrics() {
  return [
    "# HELP synaxic_stub_requests_total Requests the stub answered, by kind.",
    "# TYPE synaxic_stub_requests_total counter",
    `synaxic_stub_requests_total{kind="read"} ${counts.read}`,
    `synaxic_stub_requests_total{kind="write"} ${counts.write}`,
    "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
    "# TYPE process_start_time_seconds gauge",
    `process_start_time_seconds ${startedAt}`,
    "# HELP application_ready_time_seconds Time taken for the application to be ready to service requests",
    "# TYPE application_ready_time_seconds gauge",
    `application_ready_time_seconds{main_application_class="stub"} 0.1`,
    "",
  ].join("\n");
}

/** Runs SQL through psql; resolves with { ok, sqlstate, message }. */
function sql(text) {
  return new Promise((resolve) => {
    const p = spawn(psqlBin, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-d", conninfo, "-f", "-"], { stdio: ["pipe", "ignore", "pipe"] });
    let err = "";
    p.stderr.on("data", (d) => (err += d));
    p.on("close", (code) => {
      const m = /ERROR:\s+([0-9A-Z]{5}):\s*(.*)/.exec(err);
      resolve({ ok: code === 0, sqlstate: m ? m[1] : null, message: m ? m[2] : err.trim() });
    });
    p.stdin.end(text);
  });
}

/** The API key a request carries, read the way the app's ApiKeyAuthFilter reads it. */
function apiKeyOf(req) {
  const auth = req.headers.authorization ?? "";
  if (auth.startsWith("ApiKey ")) return auth.slice(7);
  if (auth.startsWith("syn_live_") || auth.startsWith("syn_test_")) return auth;
  const header = req.headers["x-api-key"];
  return typeof header === "string" && header !== "" ? header : null;
}

const SAFE = /^[A-Za-z0-9_]{1,64}$/;
// Usage is recorded one request at a time, after the answer, like the app's @Async recording.
let usageChain = Promise.resolve();
function recordUsage(key) {
  counts.usagePending++;
  usageChain = usageChain.then(async () => {
    const r = await sql(`INSERT INTO api_key_usage (api_key, requests) VALUES ('${key}', 1) ON CONFLICT (api_key) DO UPDATE SET requests = api_key_usage.requests + 1;`);
    counts.usagePending--;
    if (r.ok) counts.usageRecorded++;
    else {
      counts.usageFailures++;
      process.stderr.write(`Failed to record usage for API key ${key}: ${r.sqlstate} ${r.message}\n`);
    }
  });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://stub");
  const testId = req.headers["x-test-id"];
  if (journal && typeof testId === "string") {
    appendFileSync(journal, `${JSON.stringify({ id: testId, method: req.method, path: url.pathname, host: name, at: Date.now() })}\n`);
  }

  if (url.pathname === "/__stub/stats") return send(res, 200, { name, ...counts });
  if (url.pathname === "/__stub/reset") {
    resetCounts();
    return send(res, 200, { name, reset: true });
  }
  if (url.pathname === "/actuator/health") {
    counts.health++;
    return send(res, 200, { status: "UP" });
  }
  if (url.pathname === "/actuator/prometheus") {
    counts.metrics++;
    return send(res, 200, metrics(), { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  }

  if (conninfo && req.method === "GET" && url.pathname === "/login/oauth2/code/google") {
    const code = url.searchParams.get("code") ?? "";
    if (!SAFE.test(code)) return send(res, 400, { error: "bad code" });
    counts.read++;
    sql(`INSERT INTO app_users (login) VALUES ('${code}') ON CONFLICT DO NOTHING;`).then((r) =>
      r.ok ? send(res, 200, { host: name, user: code, created: true }) : send(res, 500, { host: name, error: r.message, sqlstate: r.sqlstate }),
    );
    return;
  }
  const apiKey = conninfo ? apiKeyOf(req) : null;
  if (apiKey !== null) {
    if (!SAFE.test(apiKey)) return send(res, 401, { error: "bad key" });
    res.on("finish", () => recordUsage(apiKey));
  }

  const write = !READ_METHODS.has(req.method ?? "");
  const hash = createHash("sha256");
  let bodyBytes = 0;
  req.on("data", (chunk) => {
    bodyBytes += chunk.length;
    hash.update(chunk);
  });
  req.on("end", async () => {
    if (url.pathname.startsWith("/hang")) return; // never answered
    const delayMs = Number(req.headers["x-stub-delay-ms"] ?? 0);
    if (delayMs > 0) await delay(delayMs);
    if (write) counts.write++;
    else counts.read++;
    counts.byMethod[req.method] = (counts.byMethod[req.method] ?? 0) + 1;
    send(
      res,
      200,
      {
        host: name,
        method: req.method,
        path: url.pathname,
        write,
        bodyBytes,
        bodySha256: hash.digest("hex"),
        headers: {
          host: req.headers.host,
          "x-forwarded-for": req.headers["x-forwarded-for"],
          "x-forwarded-proto": req.headers["x-forwarded-proto"],
          "x-forwarded-host": req.headers["x-forwarded-host"],
          "x-forwarded-port": req.headers["x-forwarded-port"],
          "x-real-ip": req.headers["x-real-ip"],
          "x-request-id": req.headers["x-request-id"],
          forwarded: req.headers.forwarded,
          connection: req.headers.connection,
        },
        httpVersion: req.httpVersion,
      },
      { "x-stub-write": write ? "1" : "0" },
    );
  });
});

// Longer than nginx's upstream keepalive_timeout, like the real app's, so
// that the app never closes a connection nginx is about to reuse.
server.keepAliveTimeout = 75_000;
server.headersTimeout = 76_000;
server.requestTimeout = 0;
server.listen(listenPort, listenHost, () => {
  process.stdout.write(`appStub ${name} listening on ${listen}\n`);
});
// SIGTERM is a graceful stop, as Spring Boot's (server.shutdown=graceful, the
// default since Boot 3.4): no new connections, the requests in progress
// finish, idle keep-alive connections are closed, then the process exits
// (at the latest after 30 s, Boot's default timeout-per-shutdown-phase).
let closing = false;
server.prependListener("request", (_req, res) => {
  if (closing) res.setHeader("Connection", "close");
});
process.on("SIGTERM", () => {
  closing = true;
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setInterval(() => server.closeIdleConnections(), 100).unref();
  setTimeout(() => process.exit(0), 30_000).unref();
});
process.on("SIGINT", () => process.exit(0));
