/**
 * The exporters' protection on real binaries (Debian bookworm's
 * node_exporter 1.5.0, postgres_exporter 0.11.1 and redis_exporter 1.45.0,
 * the versions the program pins) and Prometheus 2.42 scraping them with the
 * rendered configuration:
 *
 * - "target" runs the three exporters as the program configures them: the
 *   web configuration file from renderExporterWebConfig (node, PostgreSQL)
 *   and the TLS settings from redisExporterTlsEnv (Redis), with a server
 *   certificate for its address and the test CA as client CA;
 * - the test process (on the bridge) tries them over plain HTTP, over TLS
 *   without a client certificate, with a certificate from another CA or one
 *   of the fleet CA's for server use only, without and with a wrong
 *   password: every one is refused;
 * - "monitor" runs Prometheus with renderPrometheusConfig's exporterAuth
 *   (client certificate, password file): every exporter target is up; a
 *   second Prometheus with the plain configuration gets none of them;
 * - then the host firewall of a replica (replicaFirewallRules, rendered
 *   with renderNftablesRuleset) goes up on "target": "intruder" cannot even
 *   connect to an exporter port, Prometheus on "monitor" (the main host)
 *   still scrapes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import https from "node:https";
import http from "node:http";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type CertFiles, type TestCa } from "../rig/pki";
import { PrometheusServer, promtool } from "../rig/prometheus";
import { EXPORTER_SCRAPE_USER, redisExporterTlsEnv, renderExporterWebConfig } from "../../templates/exporter-web";
import { DEFAULT_EXPORTER_PORTS, JOBS, renderPrometheusConfig, renderTargetsFiles } from "../../templates/prometheus";
import { hostFirewallRules, replicaFirewallRules } from "../../lib/fleet";
import { renderNftablesRuleset } from "../../templates/firewall";
import type { Ports } from "../../lib/config";

const NODE_EXPORTER = "/usr/bin/prometheus-node-exporter";
const POSTGRES_EXPORTER = "/usr/bin/prometheus-postgres-exporter";
const REDIS_EXPORTER = "/usr/bin/prometheus-redis-exporter";
const PORTS = DEFAULT_EXPORTER_PORTS;
const EXPORTER_JOBS = [JOBS.node, JOBS.postgres, JOBS.redis];

/**
 * A bcrypt hash of `password` from the C library's crypt(3) (libxcrypt's
 * $2b$, the same algorithm and format as the $2a$ hashes @pulumi/random
 * writes; the exporters' Go bcrypt reads both).
 */
function bcrypt(password: string): string {
  const out = execFileSync("python3", ["-W", "ignore", "-c", "import crypt, sys; print(crypt.crypt(sys.stdin.read(), crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))"], {
    input: password,
    encoding: "utf8",
  }).trim();
  if (!/^\$2b\$10\$[./A-Za-z0-9]{53}$/.test(out)) throw new Error("crypt(3) did not return a bcrypt hash");
  return out;
}

interface Reply {
  status?: number;
  body?: string;
  error?: string;
}

/** One GET; resolves with the status and body, or the error (a refused handshake, a reset). */
function get(url: string, opts: { ca?: string; client?: CertFiles; auth?: string } = {}): Promise<Reply> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const headers = opts.auth ? { authorization: `Basic ${Buffer.from(opts.auth).toString("base64")}` } : {};
    const done = (r: Reply) => resolve(r);
    const req =
      u.protocol === "https:"
        ? https.get(url, { ca: opts.ca, cert: opts.client?.certPem, key: opts.client?.keyPem, headers, timeout: 5000, agent: false }, (res) => collect(res))
        : http.get(url, { headers, timeout: 5000, agent: false }, (res) => collect(res));
    function collect(res: http.IncomingMessage): void {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => done({ status: res.statusCode, body }));
      res.on("error", (e) => done({ error: String(e) }));
    }
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => done({ error: String(e) }));
  });
}

async function tcpOpen(host: Host, ip: string, port: number): Promise<boolean> {
  const r = await host.exec(["timeout", "3", "bash", "-c", `exec 3<>/dev/tcp/${ip}/${port}`], { allowFail: true });
  return r.code === 0;
}

describe("exporters behind TLS, client certificates and basic auth; Prometheus scrapes them", () => {
  let net: TestNet;
  let ca: TestCa;
  let otherCa: TestCa;
  let target: Host;
  let monitor: Host;
  let intruder: Host;
  let client: CertFiles;
  let strangerClient: CertFiles;
  let serverOnly: CertFiles;
  let prom: PrometheusServer;
  let plainProm: PrometheusServer;
  const password = randomBytes(24).toString("base64url");
  const url = (port: number, scheme = "https") => `${scheme}://${target.ip}:${port}/metrics`;

  beforeAll(async () => {
    net = await TestNet.create(["xauth-monitor", "xauth-target", "xauth-intruder"]);
    monitor = net.host("xauth-monitor");
    target = net.host("xauth-target");
    intruder = net.host("xauth-intruder");
    ca = makeCa("fleet-ca", net.mkdir("pki"));
    otherCa = makeCa("other-ca", net.mkdir("other-pki"));
    // Uses as components/Pki.ts sets them: the exporters' certificate serves only, Prometheus' is a client's only.
    const server = ca.issue("exporters", [target.ip, "xauth-target"], undefined, "server");
    client = ca.issue("prometheus-client", ["prometheus.xauth-monitor"], "prometheus.xauth-monitor", "client");
    strangerClient = otherCa.issue("stranger", ["stranger"], undefined, "client");
    // From the fleet CA, but for server use only (as the exporters' own certificate is).
    serverOnly = ca.issue("server-only", ["server-only"], undefined, "server");

    // The exporters' files, as the program uploads them (templates/exporter-web.ts).
    const web = net.mkdir("exporter-web");
    const files = { certFile: join(web, "exporter.crt"), keyFile: join(web, "exporter.key"), clientCaFile: join(web, "client-ca.crt") };
    writeFileSync(files.certFile, server.certPem);
    writeFileSync(files.keyFile, server.keyPem, { mode: 0o400 });
    writeFileSync(files.clientCaFile, ca.certPem);
    const webConfig = join(web, "web.yml");
    writeFileSync(webConfig, renderExporterWebConfig({ ...files, basicAuth: { username: EXPORTER_SCRAPE_USER, bcryptHash: bcrypt(password) } }), { mode: 0o400 });

    const textfiles = net.mkdir("textfile");
    target.spawnDaemon("node-exporter", [
      NODE_EXPORTER,
      `--web.listen-address=${target.ip}:${PORTS.nodeExporter}`,
      `--web.config.file=${webConfig}`,
      "--collector.disable-defaults",
      "--collector.textfile",
      `--collector.textfile.directory=${textfiles}`,
    ]);
    target.spawnDaemon("postgres-exporter", [POSTGRES_EXPORTER, `--web.listen-address=${target.ip}:${PORTS.postgresExporter}`, `--web.config.file=${webConfig}`], {
      // No PostgreSQL here: pg_up is 0, the endpoint answers all the same.
      env: { DATA_SOURCE_NAME: "postgresql://nobody@127.0.0.1:1/postgres?sslmode=disable" },
    });
    const redisEnv = Object.fromEntries(redisExporterTlsEnv(files).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
    target.spawnDaemon("redis-exporter", [REDIS_EXPORTER, `-web.listen-address=${target.ip}:${PORTS.redisExporter}`, "-redis.addr=redis://127.0.0.1:1"], { env: redisEnv });
    for (const port of [PORTS.nodeExporter, PORTS.postgresExporter, PORTS.redisExporter]) {
      await waitFor(`an exporter listening on ${target.ip}:${port}`, () => tcpOpen(monitor, target.ip, port), 20_000, 200);
    }

    // Prometheus' files, as the Monitoring component writes them.
    const promRoot = net.mkdir("prometheus");
    const scrape = join(promRoot, "scrape");
    mkdirSync(join(promRoot, "targets"));
    mkdirSync(scrape);
    const auth = {
      caFile: join(scrape, "ca.crt"),
      certFile: join(scrape, "client.crt"),
      keyFile: join(scrape, "client.key"),
      basicAuth: { username: EXPORTER_SCRAPE_USER, passwordFile: join(scrape, "exporter-password") },
    };
    writeFileSync(auth.caFile, ca.certPem);
    writeFileSync(auth.certFile, client.certPem);
    writeFileSync(auth.keyFile, client.keyPem, { mode: 0o400 });
    writeFileSync(auth.basicAuth.passwordFile, password, { mode: 0o400 });
    const targets = renderTargetsFiles({ hosts: [{ name: "main", role: "main", address: target.ip }], ports: PORTS });
    for (const [f, content] of Object.entries(targets)) writeFileSync(join(promRoot, "targets", f), content);
    const common = { ruleFiles: [join(promRoot, "rules", "*.yml")], targetsDir: join(promRoot, "targets"), scrapeInterval: "2s", scrapeTimeout: "2s" };
    writeFileSync(join(promRoot, "prometheus.yml"), renderPrometheusConfig({ ...common, selfTarget: `${monitor.ip}:9090`, exporterAuth: auth }));
    writeFileSync(join(promRoot, "plain.yml"), renderPrometheusConfig({ ...common, selfTarget: `${monitor.ip}:9091` }));
    const check = await promtool(["check", "config", join(promRoot, "prometheus.yml")]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    prom = await new PrometheusServer(monitor, join(promRoot, "prometheus.yml"), net.mkdir("prom-data"), 9090).start();
    plainProm = await new PrometheusServer(monitor, join(promRoot, "plain.yml"), net.mkdir("plain-data"), 9091).start();
  }, 120_000);

  afterAll(async () => {
    await prom?.stop();
    await plainProm?.stop();
    await net?.destroy();
  });

  it("plain HTTP gets no metrics from any exporter", async () => {
    for (const port of [PORTS.nodeExporter, PORTS.postgresExporter, PORTS.redisExporter]) {
      const r = await get(url(port, "http"), { auth: `${EXPORTER_SCRAPE_USER}:${password}` });
      expect(r.status, `${port}: ${JSON.stringify(r)}`).not.toBe(200);
      expect(r.body ?? "").not.toMatch(/^# HELP/m);
      process.stdout.write(`[exporter-auth] plain HTTP to ${port}: ${r.status ?? r.error} ${(r.body ?? "").trim().slice(0, 80)}\n`);
    }
  });

  it("TLS without a client certificate, with one from another CA, or with the fleet CA's for server use only, is refused at the handshake", async () => {
    for (const port of [PORTS.nodeExporter, PORTS.postgresExporter, PORTS.redisExporter]) {
      const none = await get(url(port), { ca: ca.certPem, auth: `${EXPORTER_SCRAPE_USER}:${password}` });
      expect(none.status, `${port} without a certificate: ${JSON.stringify(none)}`).toBeUndefined();
      expect(none.error).toBeDefined();
      const stranger = await get(url(port), { ca: ca.certPem, client: strangerClient, auth: `${EXPORTER_SCRAPE_USER}:${password}` });
      expect(stranger.status, `${port} with another CA's certificate: ${JSON.stringify(stranger)}`).toBeUndefined();
      expect(stranger.error).toBeDefined();
      const wrongUse = await get(url(port), { ca: ca.certPem, client: serverOnly, auth: `${EXPORTER_SCRAPE_USER}:${password}` });
      expect(wrongUse.status, `${port} with the fleet CA's server-only certificate: ${JSON.stringify(wrongUse)}`).toBeUndefined();
      process.stdout.write(`[exporter-auth] TLS to ${port}: without a certificate ${none.error}; another CA's ${stranger.error}; server-only ${wrongUse.error}\n`.replace(/\n(?!$)/g, " "));
    }
  });

  it("node_exporter and postgres_exporter also want the scrape password: none or a wrong one is 401", async () => {
    for (const port of [PORTS.nodeExporter, PORTS.postgresExporter]) {
      expect((await get(url(port), { ca: ca.certPem, client })).status, String(port)).toBe(401);
      expect((await get(url(port), { ca: ca.certPem, client, auth: `${EXPORTER_SCRAPE_USER}:wrong-${password}` })).status, String(port)).toBe(401);
      expect((await get(url(port), { ca: ca.certPem, client, auth: `someone:${password}` })).status, String(port)).toBe(401);
    }
  });

  it("with the fleet CA's client certificate (and the password where asked) each answers with its metrics", async () => {
    const node = await get(url(PORTS.nodeExporter), { ca: ca.certPem, client, auth: `${EXPORTER_SCRAPE_USER}:${password}` });
    expect(node.status).toBe(200);
    expect(node.body).toMatch(/^node_textfile_scrape_error /m);
    const pg = await get(url(PORTS.postgresExporter), { ca: ca.certPem, client, auth: `${EXPORTER_SCRAPE_USER}:${password}` });
    expect(pg.status).toBe(200);
    expect(pg.body).toMatch(/^pg_up 0$/m);
    // redis_exporter 1.45.0 has no basic auth: the client certificate is its only check.
    const redis = await get(url(PORTS.redisExporter), { ca: ca.certPem, client });
    expect(redis.status).toBe(200);
    expect(redis.body).toMatch(/^redis_up 0$/m);
  });

  it("Prometheus with the rendered exporterAuth scrapes every exporter (up == 1); the plain configuration scrapes none", async () => {
    const ups = await waitFor(
      "every exporter target up",
      async () => {
        const t = (await prom.targets()).filter((x) => (EXPORTER_JOBS as string[]).includes(x.scrapePool));
        return t.length === 3 && t.every((x) => x.health === "up") ? t : undefined;
      },
      30_000,
      500,
    );
    for (const t of ups) expect(t.scrapeUrl).toMatch(/^https:\/\//);
    const q = await prom.query(`up{job=~"${EXPORTER_JOBS.join("|")}"}`);
    expect(Object.fromEntries(q.map((s) => [s.metric.job, s.value[1]]))).toEqual({ [JOBS.node]: "1", [JOBS.postgres]: "1", [JOBS.redis]: "1" });

    const plain = await waitFor(
      "the plain server's exporter targets scraped once",
      async () => {
        const t = (await plainProm.targets()).filter((x) => (EXPORTER_JOBS as string[]).includes(x.scrapePool));
        return t.length === 3 && t.every((x) => x.health !== "unknown") ? t : undefined;
      },
      30_000,
      500,
    );
    for (const t of plain) {
      expect(t.health, `${t.scrapePool}: ${t.lastError}`).toBe("down");
      expect(t.scrapeUrl).toMatch(/^http:\/\//);
    }
  });

  it("with a replica's host firewall up, another host cannot connect to the exporters; main's Prometheus still scrapes", async () => {
    // What a replica stack renders: target is the replica, monitor the main host (its Prometheus), the test process an operator.
    const ports = { ...PORTS, http: 80, https: 443, postgres: 5432, redis: 6380, prometheus: 9090, grafana: 3000 } satisfies Ports;
    const rules = replicaFirewallRules({
      adminCidrs: [`${net.rootIp}/32`],
      mainIp: monitor.ip,
      peers: [{ name: "replica-1", privateIp: target.ip, slotName: "synaxic_replica_1" }],
      self: "replica-1",
      ports,
    });
    const ruleset = join(net.mkdir("firewall"), "firewall.nft");
    writeFileSync(ruleset, renderNftablesRuleset({ rules: hostFirewallRules(rules, 22) }));
    await target.exec(["nft", "-f", ruleset]);
    try {
      for (const port of [PORTS.nodeExporter, PORTS.postgresExporter, PORTS.redisExporter]) {
        expect(await tcpOpen(intruder, target.ip, port), `intruder to ${port}`).toBe(false);
        expect(await tcpOpen(monitor, target.ip, port), `main to ${port}`).toBe(true);
      }
      // Scrapes after the firewall went up still succeed.
      const since = Date.now() / 1000;
      await waitFor(
        "fresh successful scrapes of every exporter",
        async () => {
          const t = (await prom.targets()).filter((x) => (EXPORTER_JOBS as string[]).includes(x.scrapePool));
          return t.length === 3 && t.every((x) => x.health === "up" && Date.parse((x as unknown as { lastScrape: string }).lastScrape) / 1000 > since) ? t : undefined;
        },
        30_000,
        500,
      );
    } finally {
      await target.exec(["nft", "delete", "table", "inet", "synaxic"], { allowFail: true });
    }
  });
});
