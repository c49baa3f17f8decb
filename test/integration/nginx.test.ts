/**
 * The rendered nginx.conf on a real nginx 1.22 (Debian's), in the "main"
 * namespace, in front of app stubs on main, replica1 and replica2. Requests
 * come from the test process, which sits on the same bridge as a client.
 * Includes the upstream keep-alive pools at the configured concurrency:
 * upstream connections are counted (nftables, ss), not timed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes, createHash, randomUUID } from "node:crypto";
import https from "node:https";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { TestNet, waitFor, type Host } from "../rig/net";
import { AppStub } from "../rig/appStub";
import { ConnectCounter, KeepAliveClients, NginxInstance, ServletStub, establishedByPid, isActuatorPath, rawRequest, sendLoad, servletPath, type LoadResult } from "../rig/nginx";
import { makeCa, type TestCa } from "../rig/pki";
import { DEFAULT_PUBLIC_PATHS, NGINX_DEFAULTS, READ_UPSTREAM, WRITE_UPSTREAM, renderNginxConf, upstreamKeepaliveFor, type NginxParams } from "../../templates/nginx";

const APP_PORT = 8080;
const APPS = ["main", "replica1", "replica2"] as const;
const WRITE_METHODS = ["POST", "PUT", "PATCH", "DELETE"] as const;

let net: TestNet;
let main: Host;
const stubs: Record<string, AppStub> = {};
let nginx: NginxInstance;
let base: string;

function params(extra: Partial<NginxParams> = {}): NginxParams {
  return {
    mainApp: { name: "main", address: stubs.main!.address },
    replicaApps: [stubs.replica1!, stubs.replica2!].map((s) => ({ name: s.name, address: s.address })),
    listenPort: 80,
    ...nginx.paths,
    // Short timings so that failure scenarios take seconds, not minutes.
    failTimeout: "3s",
    proxyConnectTimeout: "1s",
    readTimeout: "1s",
    writeTimeout: "1s",
    exposeUpstreamHeader: true,
    // The app's public routes and the stub's own test routes.
    publicPaths: [...DEFAULT_PUBLIC_PATHS, "/items", "/items/", "/orders", "/orders/", "/slow", "/hang"],
    ...extra,
  };
}

async function resetStubs(): Promise<void> {
  await Promise.all(Object.values(stubs).filter((s) => s.running).map((s) => s.reset()));
}

/** Every journal entry for a test id, across all app hosts. */
function arrivals(id: string): string[] {
  return Object.values(stubs).flatMap((s) => s.journalEntries(id).map((e) => e.host));
}

function expectEvenSpread(r: LoadResult, hosts: readonly string[], n: number): void {
  const share = n / hosts.length;
  expect(Object.keys(r.byHost).sort()).toEqual([...hosts].sort());
  for (const h of hosts) {
    expect(r.byHost[h], `${h} answered ${r.byHost[h]} of ${n}`).toBeGreaterThanOrEqual(Math.floor(share * 0.95));
    expect(r.byHost[h], `${h} answered ${r.byHost[h]} of ${n}`).toBeLessThanOrEqual(Math.ceil(share * 1.05));
  }
}

function report(label: string, r: LoadResult): void {
  process.stdout.write(`[nginx] ${label}: ${JSON.stringify({ byHost: r.byHost, statuses: r.statuses, errors: r.errors, ms: r.ms })}\n`);
}

/**
 * Waits until every app answers reads through nginx again. Earlier scenarios
 * leave failures in nginx's passive health state; after fail_timeout nginx
 * lets one probe request through per app, and while the probes are out it
 * treats those apps as down, so a burst right then could find no live app.
 */
async function untilAllReadsHealthy(hosts: readonly string[] = APPS): Promise<void> {
  await waitFor("every app to answer reads through nginx", async () => {
    const r = await sendLoad(base, { method: "GET", count: 3 * hosts.length, concurrency: 1 });
    return r.errors === 0 && hosts.every((h) => (r.byHost[h] ?? 0) > 0);
  }, 15_000, 250);
}

beforeAll(async () => {
  net = await TestNet.create(["main", "replica1", "replica2", "client"]);
  main = net.host("main");
  const dir = net.mkdir("apps");
  for (const name of APPS) stubs[name] = new AppStub(net.host(name), name, APP_PORT, dir);
  await Promise.all(Object.values(stubs).map((s) => s.start()));
  nginx = new NginxInstance(main);
  base = `http://${main.ip}`;
});

afterAll(async () => {
  await nginx?.dispose();
  await net?.destroy();
});

describe("nginx in front of the main app and two replica apps", () => {
  it("passes nginx -t and starts", async () => {
    nginx.writeConf(renderNginxConf(params()));
    const t = await nginx.test();
    expect(t.stderr).toContain("syntax is ok");
    expect(t.stderr).toContain("test is successful");
    expect(t.code).toBe(0);
    await nginx.start(`${base}/nginx-health`);
    const r = await fetch(`${base}/nginx-health`);
    expect(await r.text()).toBe("ok\n");
  });

  it("spreads 10,000 GETs evenly over all three apps, with no errors", async () => {
    await resetStubs();
    const n = 10_000;
    const r = await sendLoad(base, { method: "GET", count: n, concurrency: 32 });
    report("GET x10000", r);
    expect(r.errors).toBe(0);
    expect(r.kindMismatches).toBe(0);
    expectEvenSpread(r, APPS, n);
    // The stubs' own counts agree with what the client saw.
    for (const name of APPS) expect((await stubs[name]!.stats()).read).toBe(r.byHost[name]);
  });

  it("spreads 10,000 HEADs evenly too, and OPTIONS count as reads", async () => {
    const n = 10_000;
    const r = await sendLoad(base, { method: "HEAD", count: n, concurrency: 32 });
    report("HEAD x10000", r);
    expect(r.errors).toBe(0);
    expectEvenSpread(r, APPS, n);

    const o = await sendLoad(base, { method: "OPTIONS", count: 300, concurrency: 8 });
    expect(o.errors).toBe(0);
    expect(o.kindMismatches).toBe(0);
    expectEvenSpread(o, APPS, 300);
  });

  it("sends every POST, PUT, PATCH and DELETE to the main app only", async () => {
    await resetStubs();
    const body = randomBytes(20_000); // larger than nginx's in-memory body buffer
    for (const method of WRITE_METHODS) {
      const r = await sendLoad(base, { method, count: 500, concurrency: 16, body, headers: { "content-type": "application/octet-stream" } });
      report(`${method} x500`, r);
      expect(r.errors).toBe(0);
      expect(r.kindMismatches).toBe(0);
      expect(r.byHost).toEqual({ main: 500 });
    }
    const [m, r1, r2] = await Promise.all(APPS.map((a) => stubs[a]!.stats()));
    expect(m!.write).toBe(2000);
    expect(m!.byMethod).toEqual({ POST: 500, PUT: 500, PATCH: 500, DELETE: 500 });
    expect(r1!.write + r1!.read + r2!.write + r2!.read).toBe(0);
  });

  it("passes bodies intact and sets the forwarding headers itself", async () => {
    const body = randomBytes(100_000);
    const r = await fetch(`${base}/orders?x=1`, {
      method: "POST",
      body,
      headers: {
        "x-request-id": "req-abc-123",
        // A client must not be able to choose the address the app sees.
        "x-forwarded-for": "6.6.6.6",
        forwarded: "for=6.6.6.6",
      },
    });
    expect(r.status).toBe(200);
    expect(r.headers.get("server")).toBe("nginx"); // server_tokens off: no version
    expect(r.headers.get("x-request-id")).toBe("req-abc-123");
    expect(r.headers.get("x-upstream")).toBe(stubs.main!.address);
    const j = (await r.json()) as { host: string; write: boolean; bodyBytes: number; bodySha256: string; path: string; httpVersion: string; headers: Record<string, string | undefined> };
    expect(j.host).toBe("main");
    expect(j.write).toBe(true);
    expect(j.path).toBe("/orders");
    expect(j.bodyBytes).toBe(body.length);
    expect(j.bodySha256).toBe(createHash("sha256").update(body).digest("hex"));
    expect(j.httpVersion).toBe("1.1");
    expect(j.headers["x-forwarded-for"]).toBe(net.rootIp);
    expect(j.headers["x-real-ip"]).toBe(net.rootIp);
    expect(j.headers["x-forwarded-proto"]).toBe("http");
    expect(j.headers["x-forwarded-host"]).toBe(main.ip);
    expect(j.headers["x-forwarded-port"]).toBe("80");
    expect(j.headers["x-request-id"]).toBe("req-abc-123");
    expect(j.headers.forwarded).toBeUndefined();
    // Upstream keep-alive: nginx does not ask the app to close the connection.
    expect(j.headers.connection).toBeUndefined();

    const g = await fetch(`${base}/orders/7`);
    const gj = (await g.json()) as { headers: Record<string, string | undefined> };
    expect(gj.headers["x-request-id"]).toMatch(/^[0-9a-f]{32}$/); // generated when the client sent none
  });

  it("serves the public routes and answers every other path 404 without reaching an app", async () => {
    await resetStubs();
    const reads = async () => (await Promise.all(APPS.map((a) => stubs[a]!.stats()))).reduce((n, st) => n + st.read + st.health, 0);
    const publicPaths = ["/", "/v1/ip", "/v1/convert/units?from=m&to=ft", "/css/main.css", "/health", "/privacy-policy.html", "/oauth2/authorization/google", "/actuator/health", "/api/stats"];
    for (const path of publicPaths) {
      const r = await rawRequest(main.ip, 80, path);
      expect(r.status, path).toBe(200);
      expect(r.headers["x-upstream"], path).toBeDefined();
    }
    expect(await reads()).toBe(publicPaths.length);
    // Not public: what the app has but the allow list leaves out, and what it does not have at all.
    const privatePaths = ["/api/debug/rate-limit", "/dashboard_old.html", "/v2/x", "/index.htm", "/V1/ip", "/health/x", "/actuator/info", "/actuator/health/liveness"];
    for (const path of privatePaths) expect((await rawRequest(main.ip, 80, path)).status, path).toBe(404);
    expect(await reads()).toBe(publicPaths.length);
  });

  it("adds the usual security headers once, whatever the app sends", async () => {
    const r = await fetch(`${base}/orders/1`);
    expect(r.status).toBe(200);
    expect(r.headers.get("x-content-type-options")).toBe("nosniff");
    expect(r.headers.get("x-frame-options")).toBe("DENY");
    expect(r.headers.get("content-security-policy")).toBe("frame-ancestors 'none'");
    expect(r.headers.get("referrer-policy")).toBe("strict-origin-when-cross-origin");
    // No HSTS without HTTPS.
    expect(r.headers.get("strict-transport-security")).toBeNull();
  });

  it("never retries a write that timed out; a read that times out is retried (control)", async () => {
    await resetStubs();
    // Every app answers /slow after 2.5 s; nginx gives up after 1 s.
    const ids = WRITE_METHODS.map((m) => `slow-${m}-${randomUUID()}`);
    const readId = `slow-GET-${randomUUID()}`;
    const started = Date.now();
    const statuses = await Promise.all([
      ...WRITE_METHODS.map((method, i) =>
        fetch(`${base}/slow`, { method, body: "x", headers: { "x-test-id": ids[i]!, "x-stub-delay-ms": "2500" } }).then((r) => r.status),
      ),
      fetch(`${base}/slow`, { headers: { "x-test-id": readId, "x-stub-delay-ms": "2500" } }).then((r) => r.status),
    ]);
    process.stdout.write(`[nginx] slow requests answered after ${Date.now() - started} ms: ${statuses.join(",")}\n`);
    expect(statuses).toEqual([504, 504, 504, 504, 504]);
    // Let any retry that nginx might have sent arrive before counting.
    await new Promise((r) => setTimeout(r, 2000));
    for (const id of ids) expect(arrivals(id), id).toEqual(["main"]);
    // The control: the same timeout on a read sends it to each app in turn,
    // so the journals do see retries when nginx makes them.
    expect(arrivals(readId).sort()).toEqual([...APPS].sort());
  });

  it("never retries a write whose app died mid-request", async () => {
    const ids = { POST: `hang-POST-${randomUUID()}`, PUT: `hang-PUT-${randomUUID()}`, DELETE: `hang-DELETE-${randomUUID()}` };
    const pending = Object.entries(ids).map(([method, id]) =>
      fetch(`${base}/hang`, { method, body: method === "DELETE" ? undefined : "payload", headers: { "x-test-id": id, "x-stub-delay-ms": "0" } })
        .then((r) => r.status)
        .catch(() => -1),
    );
    await waitFor("the hanging writes to reach the main app", async () => Object.values(ids).every((id) => arrivals(id).length === 1), 5000, 20);
    await stubs.main!.kill();
    const statuses = await Promise.all(pending);
    expect(statuses).toEqual([502, 502, 502]);
    await new Promise((r) => setTimeout(r, 500));
    for (const id of Object.values(ids)) expect(arrivals(id), id).toEqual(["main"]);
    // While the main app is down, writes fail fast instead of landing on a replica.
    const w = await sendLoad(base, { method: "POST", count: 20, concurrency: 4, body: Buffer.from("x") });
    expect(w.statuses).toEqual({ 502: 20 });
    await stubs.main!.start();
  });

  it("keeps reads succeeding when a replica app is killed, and takes it back when it returns", async () => {
    await untilAllReadsHealthy();
    await stubs.replica1!.kill();
    const n = 3000;
    const r = await sendLoad(base, { method: "GET", count: n, concurrency: 32 });
    report("GET x3000, replica1 killed", r);
    // Refused connections are retried on the next app: the client sees none of them.
    expect(r.errors).toBe(0);
    expect(r.byHost.replica1).toBeUndefined();
    expectEvenSpread(r, ["main", "replica2"], n);

    await stubs.replica1!.start();
    const back = await waitFor("replica1 to get reads again", async () => {
      const b = await sendLoad(base, { method: "GET", count: 60, concurrency: 4 });
      return b.errors === 0 && (b.byHost.replica1 ?? 0) > 0 ? b : undefined;
    }, 10_000, 250);
    expect(back.byHost.replica1).toBeGreaterThan(0);
  });

  it("keeps reads succeeding when a replica host drops off the network", async () => {
    await untilAllReadsHealthy();
    const replica2 = net.host("replica2");
    await replica2.cut();
    try {
      const n = 1000;
      const r = await sendLoad(base, { method: "GET", count: n, concurrency: 16 });
      report("GET x1000, replica2 cut off", r);
      // Connects to replica2 time out after 1 s and the read moves on.
      expect(r.errors).toBe(0);
      expect(r.byHost.replica2).toBeUndefined();
      expect((r.byHost.main ?? 0) + (r.byHost.replica1 ?? 0)).toBe(n);
    } finally {
      await replica2.restore();
    }
  });
});

describe("nginx upstream keep-alive at the configured concurrency", () => {
  const concurrency = NGINX_DEFAULTS.concurrency;
  let counter: ConnectCounter;

  interface Churn {
    opened: number;
    closed: number;
    ok: number;
    errors: number;
    clientsPerWorker: number[];
  }

  /**
   * Runs nginx from `conf`, drives `concurrency` keep-alive clients (every
   * fourth request a write; the apps take 20 ms, standing for real work) and
   * counts, over a window after a warm-up, the upstream connections nginx
   * opened (SYNs) and closed (those open at the start plus those opened,
   * minus those open at the end).
   */
  async function churn(conf: string): Promise<Churn> {
    nginx.writeConf(conf);
    const t = await nginx.test();
    expect(t.code, t.stderr).toBe(0);
    await nginx.start(`${base}/nginx-health`);
    const upstream = () => establishedByPid(main, "( dport = :8080 )");
    const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    const clients = new KeepAliveClients(base, { concurrency, writeEvery: 4, appDelayMs: 20 }).start();
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const [opened0, alive0] = await Promise.all([counter.opened(), upstream()]);
      const tally0 = clients.snapshot();
      await new Promise((r) => setTimeout(r, 4000));
      const [opened1, alive1, spread] = await Promise.all([counter.opened(), upstream(), establishedByPid(main, "( sport = :80 )")]);
      const tally1 = clients.snapshot();
      const opened = opened1 - opened0;
      const result = {
        opened,
        closed: sum(alive0) + opened - sum(alive1),
        ok: tally1.ok - tally0.ok,
        errors: tally1.errors - tally0.errors,
        clientsPerWorker: [...spread.values()].sort((a, b) => b - a),
      };
      process.stdout.write(`[nginx] keep-alive at concurrency ${concurrency}: ${JSON.stringify(result)}\n`);
      return result;
    } finally {
      await clients.stop();
      await nginx.stop();
    }
  }

  beforeAll(async () => {
    await nginx.stop();
    for (const s of Object.values(stubs)) if (!s.running) await s.start();
    counter = await ConnectCounter.install(main, APP_PORT);
  });

  afterAll(async () => {
    await counter?.remove();
  });

  it("renders the pools from the formula: concurrency for writes, concurrency per app for reads", () => {
    const text = renderNginxConf(params({ concurrency }));
    const pool = (group: string) => new RegExp(`upstream ${group} \\{[^}]*\\n\\s+keepalive (\\d+);`).exec(text)?.[1];
    expect(pool(WRITE_UPSTREAM)).toBe(String(upstreamKeepaliveFor(concurrency, 1)));
    expect(pool(READ_UPSTREAM)).toBe(String(upstreamKeepaliveFor(concurrency, APPS.length)));
    expect(pool(READ_UPSTREAM)).toBe(String(concurrency * 3));
  });

  it("raises each worker's open-file limit when the concurrency needs more than 1024 connections per worker", async () => {
    // 400 clients + 400 for each of the 3 read apps + 400 for writes = 2000 connections, 4000 files.
    nginx.writeConf(renderNginxConf(params({ concurrency: 400 })));
    const t = await nginx.test();
    expect(t.code, t.stderr).toBe(0);
    await nginx.start(`${base}/nginx-health`);
    try {
      const master = readFileSync(nginx.paths.pidFile, "utf8").trim();
      const workers = execFileSync("ps", ["-o", "pid=", "--ppid", master], { encoding: "utf8" }).split("\n").map((l) => l.trim()).filter(Boolean);
      expect(workers.length).toBeGreaterThan(0);
      for (const pid of workers) expect(readFileSync(`/proc/${pid}/limits`, "utf8")).toMatch(/^Max open files\s+4000\s/m);
      expect(nginx.errorLog()).not.toMatch(/worker_connections exceed open file resource limit|setrlimit/);
      expect((await fetch(`${base}/items/1`)).status).toBe(200);
    } finally {
      await nginx.stop();
    }
  });

  it("control: with the old fixed pool of 32 per group, the count sees upstream connections closed", async () => {
    const r = await churn(renderNginxConf(params({ upstreamKeepalive: 32 })));
    expect(r.errors).toBe(0);
    expect(r.ok).toBeGreaterThan(0);
    expect(r.closed).toBeGreaterThan(0);
  });

  it("closes no upstream connection with the pools sized from the concurrency", async () => {
    const r = await churn(renderNginxConf(params({ concurrency })));
    expect(r.errors).toBe(0);
    expect(r.ok).toBeGreaterThan(0);
    // Every client connected, spread over the workers somehow.
    expect(r.clientsPerWorker.reduce((a, b) => a + b, 0)).toBe(concurrency);
    expect(r.closed).toBe(0);
  });
});

describe("nginx with TLS", () => {
  let ca: TestCa;

  function get(path: string, opts: https.RequestOptions = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string; protocol: string }> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        { host: main.ip, port: 443, path, ca: ca.certPem, agent: false, ...opts },
        (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body, protocol: (res.socket as import("node:tls").TLSSocket).getProtocol?.() ?? "" }),
          );
        },
      );
      req.on("error", reject);
      req.end(opts.method && opts.method !== "GET" ? "data" : undefined);
    });
  }

  beforeAll(async () => {
    ca = makeCa("nginx-test-ca", net.mkdir("pki"));
    const cert = ca.issue("balancer", [main.ip]);
    await nginx.stop();
    nginx.writeConf(renderNginxConf(params({ tls: { certFile: cert.certFile, keyFile: cert.keyFile }, serverNames: [main.ip] })));
    const t = await nginx.test();
    expect(t.code, t.stderr).toBe(0);
    await nginx.start(`${base}/nginx-health`);
  });

  it("serves reads and writes over HTTPS with TLS 1.3 and TLS 1.2", async () => {
    const r = await get("/items/1");
    expect(r.status).toBe(200);
    expect(r.protocol).toBe("TLSv1.3");
    const j = JSON.parse(r.body) as { headers: Record<string, string> };
    expect(j.headers["x-forwarded-proto"]).toBe("https");
    expect(j.headers["x-forwarded-port"]).toBe("443");
    expect(r.headers["strict-transport-security"]).toBe("max-age=31536000");

    const r12 = await get("/items/1", { maxVersion: "TLSv1.2" });
    expect(r12.status).toBe(200);
    expect(r12.protocol).toBe("TLSv1.2");

    const writes = await Promise.all(Array.from({ length: 6 }, () => get("/items", { method: "POST" })));
    expect(writes.map((w) => JSON.parse(w.body).host)).toEqual(Array(6).fill("main"));
  });

  it("answers another Host over TLS 421 from the default server, with the same certificate and no HSTS for that name", async () => {
    // SNI and Host both name evil.test (the certificate is still checked against the test CA).
    const r = await get("/items/1", { headers: { host: "evil.test" }, checkServerIdentity: () => undefined });
    expect(r.status).toBe(421);
    expect(r.headers["x-upstream"]).toBeUndefined();
    expect(r.headers["strict-transport-security"]).toBeUndefined();
    expect(r.headers["x-frame-options"]).toBe("DENY");
    // Plain HTTP for another Host is not redirected either.
    expect((await rawRequest(main.ip, 80, "/items/1", { host: "evil.test" })).status).toBe(421);
  });

  it("refuses TLS 1.1", async () => {
    const r = await main.exec(
      ["openssl", "s_client", "-connect", `${main.ip}:443`, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", ca.certFile],
      { allowFail: true, timeoutMs: 10_000 },
    );
    expect(r.code).not.toBe(0);
    // The server, not the client, says no.
    // The client offered TLS 1.1 and the server answered with a protocol_version alert (70).
    expect(r.stderr).toMatch(/tlsv1 alert protocol version/);
    expect(r.stdout).toContain("Cipher is (NONE)");
  });

  it("redirects plain HTTP to HTTPS, keeping the method", async () => {
    const r = await fetch(`${base}/items/9?a=b`, { redirect: "manual" });
    expect(r.status).toBe(308);
    expect(r.headers.get("location")).toBe(`https://${main.ip}/items/9?a=b`);
    const w = await fetch(`${base}/items`, { method: "POST", body: "x", redirect: "manual" });
    expect(w.status).toBe(308);
    // The balancer's own health check still answers on plain HTTP.
    expect((await fetch(`${base}/nginx-health`)).status).toBe(200);
  });
});

describe("nginx with a rate limit per client address", () => {
  beforeAll(async () => {
    await nginx.stop();
    nginx.writeConf(renderNginxConf(params({ rateLimit: { perSecond: 5, burst: 10 } })));
    expect((await nginx.test()).code).toBe(0);
    await nginx.start(`${base}/nginx-health`);
    // The probe's own requests count against the client's allowance: let it refill.
    await new Promise((r) => setTimeout(r, 2500));
  });

  it("answers a burst past the allowance with 429, reaching no app, and serves the client again once it has refilled", async () => {
    await resetStubs();
    const statuses = await Promise.all(Array.from({ length: 40 }, () => fetch(`${base}/orders/1`).then((r) => r.status)));
    const ok = statuses.filter((s) => s === 200).length;
    const limited = statuses.filter((s) => s === 429).length;
    process.stdout.write(`[nginx] rate limit 5/s, burst 10: ${ok} served, ${limited} refused of 40\n`);
    expect(ok + limited).toBe(40);
    // The burst and at most a request or two that the rate refilled meanwhile.
    expect(ok).toBeGreaterThanOrEqual(10);
    expect(ok).toBeLessThanOrEqual(13);
    const reached = (await Promise.all(Object.values(stubs).map((s) => s.stats()))).reduce((a, st) => a + st.read, 0);
    expect(reached).toBe(ok);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await fetch(`${base}/orders/1`)).status).toBe(200);
  });

  it("counts the connection's address, not what X-Forwarded-For claims", async () => {
    await new Promise((r) => setTimeout(r, 2500));
    const statuses = await Promise.all(
      Array.from({ length: 40 }, (_, i) => fetch(`${base}/orders/1`, { headers: { "x-forwarded-for": `198.51.100.${i + 1}`, "x-real-ip": `198.51.100.${i + 1}` } }).then((r) => r.status)),
    );
    const ok = statuses.filter((s) => s === 200).length;
    process.stdout.write(`[nginx] 40 requests claiming 40 addresses: ${ok} served\n`);
    expect(statuses.filter((s) => s === 429).length).toBe(40 - ok);
    expect(ok).toBeLessThanOrEqual(13);
  });

  it("never refuses a client that stays below the rate", async () => {
    await new Promise((r) => setTimeout(r, 2500));
    const statuses: number[] = [];
    // 4 requests a second for 4 seconds, under the 5 a second allowed.
    for (let i = 0; i < 16; i++) {
      statuses.push((await fetch(`${base}/orders/1`)).status);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(statuses).toEqual(Array(16).fill(200));
  });
});

/**
 * The allow list against a servlet container's own reading of the path. The
 * app gets the request target as the client sent it and its container
 * resolves it again (ServletStub: Tomcat's path-parameter stripping, one
 * decoding, normalisation), so each variant is sent twice: straight to the
 * stub, which shows it would map to the actuator, and through nginx, which
 * must answer it without proxying anything.
 */
describe("nginx allow list against a servlet container's path resolution", () => {
  let servlet: ServletStub;

  /** Paths that a servlet container maps to the actuator although nginx's own $uri may not name it. */
  const bypasses = [
    "/actuator/prometheus",
    "/actuator/env",
    "/actuator;/prometheus",
    "/actuator;jsessionid=1/env",
    "/actuator/health;/../prometheus",
    "/actuator/health/..;/env",
    "/v1/..;/actuator/env",
    "/v1/ip;x=1/..;/../actuator/prometheus",
    "/css/..;/actuator/prometheus",
    "/oauth2/..;/actuator/heapdump",
    "//actuator/prometheus",
    "/%61ctuator/prometheus",
    "/actuator/%70rometheus",
    "/v1/%2e%2e/actuator/env",
    "/v1/ip/../../actuator/env",
    "/v1/./../actuator/env",
    "/actuator/health/../env",
  ];
  /**
   * Paths under a public prefix as nginx reads them ($uri starts with /v1/, /css/, ...) that the
   * container resolves to a route the allow list leaves out: without the refusal of ";" these
   * would pass the prefix check.
   */
  const prefixEscapes: [string, string][] = [
    ["/v1/..;/api/debug/rate-limit", "/api/debug/rate-limit"],
    ["/css/..;/dashboard_old.html", "/dashboard_old.html"],
    ["/v1/auth/..;/..;/api/debug/rate-limit", "/api/debug/rate-limit"],
    ["/assets/x;/../../dashboard_backup.html", "/dashboard_backup.html"],
  ];
  /** Refused as well, though this container would not map them to the actuator (case, double encoding, encoded slash, backslash). */
  const alsoRefused = ["/Actuator/prometheus", "/ACTUATOR/env", "/%2561ctuator/prometheus", "/actuator%2Fprometheus", "/v1/%253B/x", "/v1\\..\\actuator\\env", "/v1/ip%3B"];

  beforeAll(async () => {
    await nginx.stop();
    servlet = await new ServletStub(net.rootIp).start();
    nginx.writeConf(renderNginxConf(params({ mainApp: { name: "servlet", address: servlet.endpoint }, replicaApps: [] })));
    const t = await nginx.test();
    expect(t.code, t.stderr).toBe(0);
    await nginx.start(`${base}/nginx-health`);
  });

  afterAll(async () => {
    await nginx.stop();
    await servlet?.stop();
  });

  it("control: sent straight to the container, every bypass variant reaches the actuator", async () => {
    for (const path of bypasses) {
      expect(isActuatorPath(servletPath(path)), path).toBe(true);
      const r = await rawRequest(net.rootIp, servlet.port, path);
      expect(r.status, path).toBe(200);
      expect(JSON.parse(r.body), path).toMatchObject({ actuator: true });
    }
    expect(servlet.actuatorHits).toBe(bypasses.length);
  });

  it("control: sent straight to the container, paths under a public prefix resolve to routes the allow list leaves out", async () => {
    for (const [path, mapped] of prefixEscapes) {
      expect(servletPath(path), path).toBe(mapped);
      const r = await rawRequest(net.rootIp, servlet.port, path);
      expect(JSON.parse(r.body), path).toEqual({ path: mapped, actuator: false });
    }
  });

  it("through nginx, none of them (nor the other variants) reaches the container", async () => {
    const hits = servlet.actuatorHits;
    const requests = servlet.requests;
    const statuses: Record<string, number> = {};
    for (const path of [...bypasses, ...prefixEscapes.map(([p]) => p), ...alsoRefused]) {
      const r = await rawRequest(main.ip, 80, path);
      statuses[path] = r.status;
      // 404 from the allow list, or 400 where nginx's own parser rejects the target first.
      expect([400, 404], `${path} -> ${r.status}`).toContain(r.status);
      expect(r.headers["x-upstream"], path).toBeUndefined();
    }
    process.stdout.write(`[nginx] bypass variants through nginx: ${JSON.stringify(statuses)}\n`);
    expect(servlet.actuatorHits).toBe(hits);
    expect(servlet.requests).toBe(requests);
  });

  it("public routes reach the container with the path it maps unchanged, writes included", async () => {
    for (const path of ["/v1/ip", "/v1/color/convert?hex=ff0000", "/login/oauth2/code/google?code=c&state=s", "/js/main.js", "/actuator/health", "/"]) {
      const r = await rawRequest(main.ip, 80, path);
      expect(r.status, path).toBe(200);
      expect(JSON.parse(r.body).path, path).toBe(path.split("?")[0]);
    }
    const w = await rawRequest(main.ip, 80, "/v1/auth/api-key/create", { method: "POST", headers: { "content-length": "0" } });
    expect(w.status).toBe(200);
    expect(JSON.parse(w.body)).toEqual({ path: "/v1/auth/api-key/create", actuator: false });
    // The one public actuator path is the exact one: nothing below it.
    expect(servlet.actuatorHits).toBe(bypasses.length + 1);
  });
});

describe("nginx with the allowed host names", () => {
  beforeAll(async () => {
    await nginx.stop();
    for (const s of Object.values(stubs)) if (!s.running) await s.start();
    nginx.writeConf(renderNginxConf(params({ serverNames: ["synaxic.test", "*.synaxic.test"] })));
    const t = await nginx.test();
    expect(t.code, t.stderr).toBe(0);
    await nginx.start(`${base}/nginx-health`);
  });

  afterAll(async () => {
    await nginx.stop();
  });

  it("serves the named hosts and answers any other Host, or none, 421 without reaching an app", async () => {
    await resetStubs();
    for (const host of ["synaxic.test", "api.synaxic.test", "SYNAXIC.test"]) {
      const r = await rawRequest(main.ip, 80, "/v1/ip", { host });
      expect(r.status, host).toBe(200);
    }
    const reached = async () => (await Promise.all(APPS.map((a) => stubs[a]!.stats()))).reduce((n, st) => n + st.read + st.write, 0);
    expect(await reached()).toBe(3);
    for (const host of [main.ip, "evil.test", "synaxic.test.evil.test", "localhost"]) {
      const r = await rawRequest(main.ip, 80, "/v1/ip", { host });
      expect(r.status, host).toBe(421);
      expect(r.headers["x-content-type-options"], host).toBe("nosniff");
      const w = await rawRequest(main.ip, 80, "/v1/auth/api-key/create", { host, method: "POST", headers: { "content-length": "0" } });
      expect(w.status, host).toBe(421);
    }
    expect((await rawRequest(main.ip, 80, "/v1/ip", { host: null })).status).toBe(421);
    expect(await reached()).toBe(3);
    // The balancer's own health check answers whatever the Host.
    expect((await rawRequest(main.ip, 80, "/nginx-health", { host: "evil.test" })).status).toBe(200);
  });
});

describe("a gapless deploy of the app (templates/app.ts deploy slots)", () => {
  const SLOT_B = APP_PORT + 1;
  let next: AppStub;

  beforeAll(async () => {
    await nginx.stop();
    for (const name of APPS) if (!stubs[name]!.running) await stubs[name]!.start();
    // Replica apps as a balancer in another stack sees them: both slots, the idle one refusing connections.
    nginx.writeConf(renderNginxConf(params({ replicaApps: [stubs.replica1!, stubs.replica2!].map((s) => ({ name: s.name, address: s.address, standby: `${s.host.ip}:${SLOT_B}` })) })));
    const t = await nginx.test();
    expect(t.code, t.stderr).toBe(0);
    await nginx.start(`${base}/nginx-health`);
  });

  afterAll(async () => {
    await next?.kill();
    await nginx.stop();
  });

  /** Reads and writes through nginx until stop() (each request on a new connection: see the test), tallied. */
  function backgroundLoad() {
    let running = true;
    const results: LoadResult[] = [];
    const loops = (["GET", "POST"] as const).map(async (method) => {
      while (running) results.push(await sendLoad(base, { method, count: 40, concurrency: 4, headers: { connection: "close" } }));
    });
    return {
      async stop() {
        running = false;
        await Promise.all(loops);
        const sum = (f: (r: LoadResult) => number) => results.reduce((n, r) => n + f(r), 0);
        return { requests: sum((r) => Object.values(r.statuses).reduce((a, b) => a + b, 0) + r.transportErrors), errors: sum((r) => r.errors), byHost: results.reduce<Record<string, number>>((m, r) => { for (const [h, n] of Object.entries(r.byHost)) m[h] = (m[h] ?? 0) + n; return m; }, {}) };
      },
    };
  }

  it("with every replica app listed in both slots, reads never fail: the idle slot's refused connections are retried", async () => {
    await untilAllReadsHealthy();
    const r = await sendLoad(base, { method: "GET", count: 3000, concurrency: 16 });
    report("GET x3000, idle slots listed", r);
    expect(r.errors).toBe(0);
    expectEvenSpread(r, APPS, 3000);
  });

  // Clients here open a connection per request: a client that reuses an idle
  // keep-alive connection can find it closed by nginx on any reload (the old
  // workers close their idle connections), which browsers and HTTP client
  // libraries retry; that is the client's side and the same for every reload.
  it("main's app moves to slot b under reads and writes: the configuration names slot b, the reload waits for the old workers, then slot a stops (SIGTERM); not one request fails", async () => {
    next = await new AppStub(main, "main", SLOT_B, net.mkdir("apps-slot-b")).start();
    const load = backgroundLoad();
    await new Promise((r) => setTimeout(r, 1500));
    nginx.writeConf(renderNginxConf(params({ mainApp: { name: "main", address: next.address }, replicaApps: [stubs.replica1!, stubs.replica2!].map((s) => ({ name: s.name, address: s.address, standby: `${s.host.ip}:${SLOT_B}` })) })));
    expect((await nginx.test()).code).toBe(0);
    const drained = await nginx.reload();
    await stubs.main!.terminate();
    await new Promise((r) => setTimeout(r, 1500));
    const result = await load.stop();
    process.stdout.write(`[nginx] deploy to slot b under load: ${JSON.stringify(result)}; old workers gone ${drained} ms after the reload\n`);
    expect(result.requests).toBeGreaterThan(200);
    expect(result.errors).toBe(0);
    // Writes reach the new slot's app now, and only it.
    await next.reset();
    const w = await sendLoad(base, { method: "POST", count: 50, concurrency: 4 });
    expect(w.errors).toBe(0);
    expect((await next.stats()).write).toBe(50);
  });

  it("control: the old slot stopped before the balancer moves (what a deploy that deletes first does) fails writes", async () => {
    const back = await new AppStub(main, "main", APP_PORT, net.mkdir("apps-slot-a2")).start();
    const load = backgroundLoad();
    await new Promise((r) => setTimeout(r, 1000));
    await next.terminate();
    await new Promise((r) => setTimeout(r, 1000));
    nginx.writeConf(renderNginxConf(params({ mainApp: { name: "main", address: back.address }, replicaApps: [stubs.replica1!, stubs.replica2!].map((s) => ({ name: s.name, address: s.address, standby: `${s.host.ip}:${SLOT_B}` })) })));
    await nginx.reload();
    const result = await load.stop();
    process.stdout.write(`[nginx] control, old slot stopped first: ${JSON.stringify(result)}\n`);
    expect(result.errors).toBeGreaterThan(0);
    next = back;
  });
});
