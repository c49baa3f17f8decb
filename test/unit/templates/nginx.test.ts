import { describe, expect, it } from "vitest";
import {
  DEFAULT_PUBLIC_PATHS,
  MAX_CONCURRENCY,
  NGINX_DEFAULTS,
  renderNginxConf,
  upstreamKeepaliveFor,
  validateUpstreamAddress,
  workerConnectionsFor,
  READ_UPSTREAM,
  WRITE_UPSTREAM,
  type AppEndpoint,
  type NginxParams,
} from "../../../templates/nginx";

const MAIN: AppEndpoint = { name: "main", address: "172.30.0.20:8080" };
const REPLICAS: AppEndpoint[] = [
  { name: "replica1", address: "10.0.1.11:8080" },
  { name: "replica2", address: "10.0.1.12:8080" },
  { name: "replica-3", address: "app.replica3.internal:8080" },
];

function conf(replicas: number, extra: Partial<NginxParams> = {}): string {
  return renderNginxConf({ mainApp: MAIN, replicaApps: REPLICAS.slice(0, replicas), ...extra });
}

/** The text of a block such as "upstream synaxic_read" (up to its closing brace at the same indent). */
function block(text: string, header: string): string {
  const start = text.indexOf(`${header} {`);
  if (start < 0) throw new Error(`no block ${header}`);
  const indent = text.slice(text.lastIndexOf("\n", start) + 1, start);
  const end = text.indexOf(`\n${indent}}`, start);
  return text.slice(start, end);
}

function servers(text: string, header: string): string[] {
  return [...block(text, header).matchAll(/^\s*server (\S+) /gm)].map((m) => m[1]!);
}

describe("renderNginxConf", () => {
  it.each([0, 1, 3])("renders with %i replicas (snapshot)", (n) => {
    expect(conf(n)).toMatchSnapshot();
  });

  it("renders TLS with a Docker port mapping (snapshot)", () => {
    expect(
      conf(3, { listenPort: 8080, publicHttpPort: 80, tls: { certFile: "/etc/nginx/tls/fullchain.pem", keyFile: "/etc/nginx/tls/privkey.pem", port: 8443, publicPort: 443 }, foreground: true }),
    ).toMatchSnapshot();
  });

  it.each([0, 1, 3])("writes go to the main app only, reads to the main app and all %i replicas", (n) => {
    const text = conf(n);
    expect(servers(text, `upstream ${WRITE_UPSTREAM}`)).toEqual([MAIN.address]);
    expect(servers(text, `upstream ${READ_UPSTREAM}`)).toEqual([MAIN.address, ...REPLICAS.slice(0, n).map((r) => r.address)]);
  });

  it("routes by method: GET, HEAD, OPTIONS read; everything else writes", () => {
    const map = block(conf(1), "map $request_method $synaxic_method_writes");
    expect(map).toMatch(/default 1;/);
    expect(map).toContain("~^(GET|HEAD|OPTIONS)$ 0;");
    expect(map.match(/ 0;/g)).toHaveLength(1);
  });

  it("paths that write on GET go to the writer: writePaths as anchored, case-sensitive prefixes, chained after the method", () => {
    const map = block(conf(1), "map $uri $synaxic_path_writes");
    expect(map).toContain("default $synaxic_method_writes;");
    expect([...map.matchAll(/^\s*~(\S+) 1;$/gm)].map((m) => m[1])).toEqual(["^/oauth2/", "^/login/oauth2/code/", "^/login", "^/logout", "^/v1/auth/"]);
    const custom = block(conf(1, { writePaths: ["/a.b/c", "/x_y~z-"] }), "map $uri $synaxic_path_writes");
    expect(custom).toContain("~^/a\\.b/c 1;");
    expect(custom).toContain("~^/x_y~z- 1;");
    expect(block(conf(1, { writePaths: [] }), "map $uri $synaxic_path_writes")).not.toMatch(/ 1;/);
  });

  it("requests with an API key go to the writer unless apiKeyRequests is replicas", () => {
    const text = conf(2);
    expect(block(text, "map $http_authorization $synaxic_authorization_key")).toContain('"~^(ApiKey |syn_live_|syn_test_)" 1;');
    expect(block(text, "map $http_x_api_key $synaxic_api_key")).toContain('"" $synaxic_authorization_key;');
    expect(block(text, "map $synaxic_api_key $synaxic_to_writer")).toContain("default $synaxic_path_writes;");
    const spread = conf(2, { apiKeyRequests: "replicas" });
    expect(spread).not.toContain("$http_x_api_key");
    expect(spread).not.toContain("$http_authorization");
    expect(block(spread, "map $uri $synaxic_to_writer")).toContain("default $synaxic_method_writes;");
  });

  it.each([
    [{ writePaths: ["login"] }, /write path "login" must start with "\/"/],
    [{ writePaths: ["/login {"] }, /write path "\/login \{"/],
    [{ writePaths: ["/a;b"] }, /write path "\/a;b"/],
    [{ writePaths: ["/(x)"] }, /write path/],
    [{ apiKeyRequests: "all" as never }, /apiKeyRequests must be "writer" or "replicas"/],
  ])("refuses routing %o", (extra, error) => {
    expect(() => conf(1, extra)).toThrow(error);
  });

  it("never retries writes and retries reads only on errors, timeouts, 502 and 503", () => {
    const text = conf(3);
    const write = block(text, `location @${WRITE_UPSTREAM}`);
    expect(write).toContain(`proxy_pass http://${WRITE_UPSTREAM};`);
    expect(write).toContain("proxy_next_upstream off;");
    const read = block(text, "location /");
    expect(read).toContain(`proxy_pass http://${READ_UPSTREAM};`);
    expect(read).toContain("proxy_next_upstream error timeout http_502 http_503;");
    expect(read).toContain(`error_page 418 = @${WRITE_UPSTREAM};`);
    // Nothing proxies to the write upstream except the named write location.
    expect(text.match(new RegExp(`proxy_pass http://${WRITE_UPSTREAM};`, "g"))).toHaveLength(1);
    expect(text).not.toContain("non_idempotent");
  });

  it("uses passive health checks and upstream keep-alive", () => {
    const text = conf(2, { maxFails: 5, failTimeout: "20s", upstreamKeepalive: 16 });
    const up = block(text, `upstream ${READ_UPSTREAM}`);
    expect(up).toContain(`server ${REPLICAS[0]!.address} max_fails=5 fail_timeout=20s;`);
    expect(up).toContain("keepalive 16;");
    const server = block(text, "    server");
    expect(server).toContain("proxy_http_version 1.1;");
    expect(server).toContain('proxy_set_header Connection "";');
    expect(text).toContain("server_tokens off;");
  });

  it("sizes each group's keep-alive pool at concurrency per app in the group, per worker", () => {
    expect(NGINX_DEFAULTS.concurrency).toBe(64);
    expect(upstreamKeepaliveFor(64, 1)).toBe(64);
    expect(upstreamKeepaliveFor(50, 4)).toBe(200);
    for (const n of [0, 1, 3]) {
      const text = conf(n);
      // The default concurrency: writes go to one app, reads to the main app and every replica.
      expect(block(text, `upstream ${WRITE_UPSTREAM}`)).toMatch(/\n {8}keepalive 64;\n/);
      expect(block(text, `upstream ${READ_UPSTREAM}`)).toMatch(new RegExp(`\\n {8}keepalive ${64 * (1 + n)};\\n`));
    }
    const sized = conf(3, { concurrency: 50 });
    expect(block(sized, `upstream ${WRITE_UPSTREAM}`)).toContain("keepalive 50;");
    expect(block(sized, `upstream ${READ_UPSTREAM}`)).toContain("keepalive 200;");
    expect(sized).toContain("# Idle connections each worker keeps per group: concurrency (50) for each app in the group.");
    // Not divided by the workers: the count is per worker, and one worker may get every client.
    expect(conf(1, { concurrency: 50, workerProcesses: 4 })).toContain("keepalive 100;");
  });

  it("a fixed upstreamKeepalive replaces the sizing in both groups", () => {
    const text = conf(3, { upstreamKeepalive: 32, concurrency: 50 });
    expect(block(text, `upstream ${WRITE_UPSTREAM}`)).toContain("keepalive 32;");
    expect(block(text, `upstream ${READ_UPSTREAM}`)).toContain("keepalive 32;");
    expect(text).toContain("a fixed 32 (upstreamKeepalive)");
  });

  it("gives each worker the connections its clients and pools may need", () => {
    expect(workerConnectionsFor(64, 4)).toBe(64 * 6);
    // Within nginx's usual 1024: unchanged, and no file limit of its own.
    expect(conf(3)).toContain("    worker_connections 1024;\n");
    expect(conf(3)).not.toContain("worker_rlimit_nofile");
    // 200 clients + 200 per app for 4 read apps + 200 for writes = 1200.
    const big = conf(3, { concurrency: 200 });
    expect(big).toContain("    worker_connections 1200;\n");
    expect(big).toContain("\nworker_rlimit_nofile 2400;\n");
    // An explicit value is kept when it is enough.
    expect(conf(3, { concurrency: 200, workerConnections: 4096 })).toContain("    worker_connections 4096;\n");
  });

  it("sets forwarding headers with the public ports", () => {
    const text = conf(1, { listenPort: 8080, publicHttpPort: 80 });
    expect(text).toContain("proxy_set_header X-Forwarded-Port 80;");
    expect(text).toContain("proxy_set_header X-Forwarded-For $remote_addr;");
    expect(text).toContain("proxy_set_header X-Forwarded-Proto $scheme;");
    expect(text).toContain('proxy_set_header Forwarded "";');
  });

  it("with TLS, plain HTTP only redirects (to the public HTTPS port) and TLS is 1.2+", () => {
    const text = conf(1, { tls: { certFile: "/c.pem", keyFile: "/k.pem", port: 8443, publicPort: 443 } });
    const [http, https] = text.split(/\n {4}server \{/).slice(1);
    expect(http).toContain("return 308 https://$host$request_uri;");
    expect(http).not.toContain("proxy_pass");
    expect(https).toContain("listen 8443 ssl http2;");
    expect(https).toContain("ssl_protocols TLSv1.2 TLSv1.3;");
    expect(https).toContain('add_header Strict-Transport-Security "max-age=31536000" always;');
    expect(conf(1, { tls: { certFile: "/c.pem", keyFile: "/k.pem", port: 8443 } })).toContain("return 308 https://$host:8443$request_uri;");
    expect(conf(1, { tls: { certFile: "/c.pem", keyFile: "/k.pem", hstsMaxAgeSeconds: 0 } })).not.toContain("add_header Strict-Transport-Security");
  });

  it("leaves daemon mode to the command line unless asked", () => {
    expect(conf(0)).not.toContain("daemon off;");
    expect(conf(0, { foreground: true })).toContain("\ndaemon off;\n");
  });

  it("lets only the allow list through: refusals first, then exact paths, then the actuator, then prefixes", () => {
    const text = conf(0);
    const map = block(text, "map $uri $synaxic_refused");
    const keys = [...map.matchAll(/^\s*"([^"]+)" (\d);$/gm)].map((m) => [m[1], m[2]]);
    expect(map).toContain("default 1;");
    expect(keys[0]).toEqual(["~[;%\\x5c]", "1"]);
    const actuator = keys.findIndex(([k]) => k === "~*actuator");
    expect(keys[actuator]![1]).toBe("1");
    const exact = keys.slice(1, actuator).map(([k]) => k);
    const prefixes = keys.slice(actuator + 1).map(([k]) => k);
    const entry = (p: string) => p.replace(/\./g, "\\.");
    expect(exact).toEqual(DEFAULT_PUBLIC_PATHS.filter((p) => p === "/" || !p.endsWith("/")).map((p) => `~^${entry(p)}$`));
    expect(prefixes).toEqual(DEFAULT_PUBLIC_PATHS.filter((p) => p !== "/" && p.endsWith("/")).map((p) => `~^${entry(p)}`));
    expect(keys.slice(1).every(([k, v]) => k === "~*actuator" || v === "0")).toBe(true);
    // Of the actuator, only exact paths: health, and the one metric the app's health page reads.
    expect(exact.filter((k) => /actuator/.test(k!))).toEqual(["~^/actuator/health$", "~^/actuator/metrics/jvm\\.memory\\.used$"]);
    // The one location that proxies checks the list before anything else.
    expect(block(text, "location /")).toMatch(/^location \/ \{\n\s+if \(\$synaxic_refused\) \{\n\s+return 404;/);
    expect(text.match(/location [^@=]/g)).toHaveLength(1);
  });

  it("takes a custom allow list; \"/\" alone is the root page, not a prefix", () => {
    const map = block(conf(0, { publicPaths: ["/", "/api/", "/a.b"] }), "map $uri $synaxic_refused");
    expect(map).toContain('"~^/$" 0;');
    expect(map).toContain('"~^/api/" 0;');
    expect(map).toContain('"~^/a\\.b$" 0;');
    expect(map).not.toContain('"~^/" 0;');
    expect(block(conf(0, { publicPaths: [] }), "map $uri $synaxic_refused").match(/ 0;/g)).toBeNull();
  });

  it.each([
    [["v1/"], /public path "v1\/" must start with "\/"/],
    [["/v1/;"], /public path "\/v1\/;"/],
    [["/v1/%2e"], /public path/],
    [["/a b"], /public path/],
    [["/actuator/"], /public path "\/actuator\/" opens a prefix under the actuator/],
    [["/x/Actuator/"], /opens a prefix under the actuator/],
    ["/v1/" as never, /publicPaths must be a list/],
  ])("refuses publicPaths %o", (publicPaths, error) => {
    expect(() => conf(0, { publicPaths })).toThrow(error);
  });

  it("serves any Host without serverNames; with them, a default server answers every other Host 421", () => {
    const open = conf(0);
    expect(open).toContain("server_name _;");
    expect(open).not.toContain("default_server");
    expect(open).not.toContain("return 421");
    const named = conf(0, { serverNames: ["example.com", "*.example.com", "203.0.113.7"] });
    const def = block(named, '# Any Host but example.com, *.example.com, 203.0.113.7 (or none): 421 Misdirected Request, nothing proxied.\n    server');
    expect(def).toContain("listen 80 default_server;");
    expect(def).toContain("return 421;");
    expect(def).not.toContain("proxy_pass");
    expect(named).toContain("server_name example.com *.example.com 203.0.113.7;");
    const tls = conf(0, { serverNames: ["example.com"], tls: { certFile: "/c.pem", keyFile: "/k.pem" } });
    expect(tls).toContain("listen 443 ssl http2 default_server;");
    expect(tls.match(/listen 443 ssl http2/g)).toHaveLength(2);
    expect(tls.match(/ssl_certificate \/c\.pem;/g)).toHaveLength(2);
    // HSTS only from the named HTTPS server.
    expect(tls.match(/Strict-Transport-Security "/g)).toHaveLength(1);
  });

  it("adds the security headers on every server, HSTS only with TLS, and hides the app's copies", () => {
    for (const text of [conf(0), conf(0, { serverNames: ["example.com"] })]) {
      for (const h of ["X-Content-Type-Options nosniff", "X-Frame-Options DENY", `Content-Security-Policy "frame-ancestors 'none'"`, "Referrer-Policy strict-origin-when-cross-origin"]) {
        expect(text.match(new RegExp(`add_header ${h.replace(/[()]/g, "\\$&")} always;`, "g"))?.length, h).toBe(text.match(/^ {4}server \{/gm)!.length);
      }
      expect(text).not.toContain("add_header Strict-Transport-Security");
      for (const h of ["X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Strict-Transport-Security"]) expect(text).toContain(`proxy_hide_header ${h};`);
    }
  });

  it("limits requests per client address only when asked, and says so in the error", () => {
    expect(conf(0)).not.toContain("limit_req");
    const limited = conf(0, { rateLimit: { perSecond: 50, burst: 100 } });
    expect(limited).toContain("limit_req_zone $binary_remote_addr zone=synaxic_per_client:10m rate=50r/s;");
    expect(limited).toContain("limit_req zone=synaxic_per_client burst=100 nodelay;");
    expect(limited).toContain("limit_req_status 429;");
    expect(() => conf(0, { rateLimit: { perSecond: 0, burst: 1 } })).toThrow(/rateLimit.perSecond/);
  });
});

describe("renderNginxConf validation", () => {
  const cases: [string, Partial<NginxParams>, RegExp][] = [
    ["a replica at the main app's address", { replicaApps: [{ name: "replica1", address: MAIN.address }] }, /duplicate upstream address 172\.30\.0\.20:8080 \(apps main and replica1\)/],
    ["two replicas at one address", { replicaApps: [REPLICAS[0]!, { name: "replica9", address: REPLICAS[0]!.address }] }, /duplicate upstream address/],
    ["the same address in another case", { replicaApps: [{ name: "a", address: "App.Internal:80" }, { name: "b", address: "app.internal:80" }] }, /duplicate upstream address/],
    ["two apps with one name", { replicaApps: [{ name: "main", address: "10.0.0.9:8080" }] }, /duplicate app name "main"/],
    ["an address without a port", { replicaApps: [{ name: "r", address: "10.0.0.9" }] }, /must be host:port/],
    ["an IPv4 address out of range", { replicaApps: [{ name: "r", address: "10.0.0.256:8080" }] }, /invalid host "10\.0\.0\.256"/],
    ["port 0", { replicaApps: [{ name: "r", address: "10.0.0.9:0" }] }, /invalid port/],
    ["port 65536", { replicaApps: [{ name: "r", address: "10.0.0.9:65536" }] }, /invalid port/],
    ["a host with a space", { replicaApps: [{ name: "r", address: "bad host:80" }] }, /invalid host/],
    ["a host with a semicolon", { replicaApps: [{ name: "r", address: "a;b:80" }] }, /invalid host/],
    ["an unbracketed IPv6 address", { replicaApps: [{ name: "r", address: "fd00::1:80" }] }, /invalid host/],
    ["a bracketed non-address", { replicaApps: [{ name: "r", address: "[1:2:3]:80" }] }, /invalid host/],
    ["an app name with a newline", { replicaApps: [{ name: "r\nx", address: "10.0.0.9:80" }] }, /app name/],
    ["TLS on the HTTP port", { listenPort: 443, tls: { certFile: "/c", keyFile: "/k" } }, /tls\.port and listenPort are both 443/],
    ["TLS without a key", { tls: { certFile: "/c", keyFile: "" } }, /both certFile and keyFile/],
    ["a certificate path that would inject a directive", { tls: { certFile: "/c; include /etc/passwd", keyFile: "/k" } }, /tls\.certFile must be a plain path/],
    ["an nginx time with a space", { failTimeout: "10 s" }, /failTimeout must be an nginx time/],
    ["a body size in words", { clientMaxBodySize: "ten megabytes" }, /clientMaxBodySize must be an nginx size/],
    ["a listen port of 0", { listenPort: 0 }, /listenPort must be a port/],
    ["a server name with a brace", { serverNames: ["example.com}"] }, /server name "example\.com\}" must be a host name/],
    ["a server name with a space", { serverNames: ["a b"] }, /server name "a b"/],
    ["the catch-all name", { serverNames: ["_"] }, /server name "_"/],
    ["a log path with a quote", { accessLog: '/var/log/"x' }, /accessLog must be a plain path/],
    ["a concurrency of 0", { concurrency: 0 }, /concurrency must be an integer >= 1, got 0/],
    ["a negative concurrency", { concurrency: -5 }, /concurrency must be an integer >= 1, got -5/],
    ["a fractional concurrency", { concurrency: 12.5 }, /concurrency must be an integer >= 1, got 12.5/],
    ["a concurrency that is not a number", { concurrency: "64" as unknown as number }, /concurrency must be an integer >= 1/],
    ["a concurrency above the bound", { concurrency: MAX_CONCURRENCY + 1 }, /concurrency must be at most 100000, got 100001/],
    ["a keep-alive pool of 0", { upstreamKeepalive: 0 }, /upstreamKeepalive must be an integer >= 1, got 0/],
    [
      "worker connections too few for the concurrency",
      { concurrency: 400, workerConnections: 1024 },
      /workerConnections \(1024\) is below the 1200 connections one worker may need at concurrency 400 \(400 clients, 400 for each of the 1 apps that take reads, 400 for writes\)/,
    ],
  ];
  it.each(cases)("rejects %s", (_, extra, message) => {
    expect(() => renderNginxConf({ mainApp: MAIN, replicaApps: [], ...extra })).toThrow(message);
  });

  it("accepts IPv4, DNS names and bracketed IPv6 upstreams", () => {
    for (const a of ["10.0.0.1:8080", "app-1.example.internal:80", "[fd00::1]:8080", "localhost:1"]) expect(validateUpstreamAddress(a)).toBe(a);
  });
});
