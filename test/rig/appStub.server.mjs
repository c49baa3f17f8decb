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
// A request with an `x-stub-delay-ms` header is answered that much later.
// Every request carrying an `x-test-id` header is appended to the journal file
// synchronously on arrival, before anything else happens, so the journal
// survives the process being killed mid-request.
import http from "node:http";
import process from "node:process";
import { appendFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { Buffer } from "node:buffer";
import { URL } from "node:url";

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
const sep = listen.lastIndexOf(":");
const listenHost = listen.slice(0, sep).replace(/^\[|\]$/g, "");
const listenPort = Number(listen.slice(sep + 1));
const startedAt = Date.now() / 1000;

let counts;
function resetCounts() {
  counts = { read: 0, write: 0, byMethod: {}, health: 0, metrics: 0 };
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
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => process.exit(0));
}
