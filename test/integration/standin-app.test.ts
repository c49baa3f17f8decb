/**
 * The stand-in app (standin-app/server.mjs), run with Node directly on rig
 * hosts, against real servers set up as the program sets them up: a
 * PostgreSQL primary on "main" and a streaming standby on "replica1"
 * (verify-full TLS from the fleet's CA, the rendered roles and pg_hba), and
 * a Redis master on "main" from the rendered redis.conf and users.acl (TLS
 * only, the app's ACL user). Each app gets the environment the program
 * renders for it (templates/app.ts appEnvironment), the secrets as files of a
 * Spring config tree and the PKCS12 truststore the program builds
 * (lib/truststore.ts); only the container paths of the config tree, the CA
 * and the truststore are moved into the rig's work directory.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, type ChildProcess } from "node:child_process";
import { cpSync, mkdirSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type TestCa } from "../rig/pki";
import { PgCluster, PgNode, startPrimaryWithRoles } from "../rig/postgres";
import { randomRedisUsers, redisCli, RedisServer } from "../rig/redis";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";
import { APP_PG_CA, APP_SECRETS_DIR, appEnvironment } from "../../templates/app";
import { buildTruststore } from "../../lib/truststore";
import { STANDIN_APP_FILES } from "../../templates/standin-app";

const SOURCE = resolve(__dirname, "../../standin-app");
const PORT = 8080;

let net: TestNet;
let ca: TestCa;
let cluster: PgCluster;
let primary: PgNode;
let standby: PgNode;
let redis: RedisServer;
let appDir: string;
const users = randomRedisUsers();
const truststorePassword = `ts-${randomBytes(9).toString("base64url")}`;

interface Started {
  proc: ChildProcess;
  log: string;
  url: string;
}

interface StandinOptions {
  /** Truststore to give it (default: the fleet CA's). */
  truststore?: string;
  truststorePassword?: string;
  redisHost?: string;
  /** A CA file for PostgreSQL other than the fleet's. */
  pgCa?: string;
  /** Leave out the config tree directory. */
  noConfigTree?: boolean;
  port?: number;
}

/** Starts the stand-in on `host` in `mode`, wired as the program wires the app there. */
function startStandin(host: Host, mode: "write" | "read", label: string, o: StandinOptions = {}): Started {
  const dir = net.mkdir(`standin-${label}`);
  const tree = join(dir, "configtree");
  if (!o.noConfigTree) {
    // The four files SynaxicApp uploads into APP_SECRETS_DIR.
    mkdirSync(tree, { mode: 0o700 });
    net.writeFile(join(tree, "spring.datasource.password"), cluster.roles.app.password, 0o400);
    net.writeFile(join(tree, "spring.data.redis.password"), users.app.password, 0o400);
    net.writeFile(join(tree, "REDIS_TRUSTSTORE_PASSWORD"), o.truststorePassword ?? truststorePassword, 0o400);
    net.writeFile(join(tree, "GOOGLE_CLIENT_SECRET"), "not-a-real-secret", 0o400);
  }
  const port = o.port ?? PORT;
  const env = Object.fromEntries(
    appEnvironment({
      mode,
      listenAddress: host.ip,
      listenPort: port,
      dbHost: host.ip,
      dbPort: 5432,
      dbName: cluster.roles.appDatabase,
      dbUser: cluster.roles.app.name,
      redisMasterHost: o.redisHost ?? net.host("main").ip,
      redisPort: 6380,
      redisUser: users.app.name,
      googleClientId: "test.apps.googleusercontent.com",
    }).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  ) as Record<string, string>;
  // The container paths, moved into the rig's work directory.
  env.SPRING_CONFIG_IMPORT = env.SPRING_CONFIG_IMPORT!.replace(APP_SECRETS_DIR, `${tree}/`);
  env.SPRING_DATASOURCE_URL = env.SPRING_DATASOURCE_URL!.replace(APP_PG_CA, o.pgCa ?? ca.certFile);
  env.STANDIN_REDIS_TRUSTSTORE = o.truststore ?? join(net.dir, "truststore.p12");
  const { proc, log } = host.spawnDaemon(`standin-${label}`, [process.execPath, join(appDir, "server.mjs")], { env });
  return { proc, log, url: `http://${host.ip}:${port}` };
}

async function health(app: Started): Promise<{ code: number; body: { status: string; components: Record<string, { status: string; details?: Record<string, unknown> }> } }> {
  const r = await fetch(`${app.url}/actuator/health`);
  return { code: r.status, body: (await r.json()) as never };
}

async function waitUp(app: Started): Promise<void> {
  let last = "";
  await waitFor(`the stand-in at ${app.url} to report UP`, async () => {
    if (app.proc.exitCode !== null) throw new Error(`the stand-in exited (${app.proc.exitCode}):\n${net.readLog(app.log)}`);
    const h = await health(app).catch((e: Error) => ({ code: 0, body: { status: e.message } }));
    last = JSON.stringify(h.body);
    return h.body.status === "UP";
  }, 120_000, 250).catch((e: Error) => {
    throw new Error(`${e.message}; last health: ${last}; its log:\n${net.readLog(app.log).slice(-3000)}`);
  });
}

async function exited(app: Started): Promise<{ code: number | null; log: string }> {
  await waitFor("the stand-in to exit", async () => app.proc.exitCode !== null || app.proc.signalCode !== null, 30_000, 100);
  return { code: app.proc.exitCode, log: net.readLog(app.log) };
}

let mainApp: Started;
let replicaApp: Started;

beforeAll(async () => {
  net = await TestNet.create(["main", "replica1"]);
  const main = net.host("main");
  const replica1 = net.host("replica1");
  ca = makeCa("standin-ca", net.mkdir("ca"));

  // The stand-in's dependencies, installed from its lockfile as the program's build installs them.
  appDir = net.mkdir("standin-app");
  for (const f of STANDIN_APP_FILES) cpSync(join(SOURCE, f), join(appDir, f));
  execFileSync("npm", ["ci", "--prefix", appDir, "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"], { stdio: ["ignore", "ignore", "pipe"], timeout: 300_000 });

  cluster = new PgCluster({ net, ca, dbHosts: [main, replica1], appHosts: [main, replica1], exporterHosts: [] });
  primary = cluster.node(main);
  standby = cluster.node(replica1);
  await startPrimaryWithRoles(primary);
  await standby.startReplica("replica", primary);
  await primary.waitStreaming(standby);

  const cert = ca.issue("redis-main", [main.ip]);
  redis = RedisServer.create(net, main, "master", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
  await redis.start(renderRedisConf({ role: "master", bind: [main.ip, "127.0.0.1"], ...redis.paths }), renderRedisAcl(users));
  net.writeFile(join(net.dir, "truststore.p12"), buildTruststore([ca.certPem], truststorePassword), 0o400);

  mainApp = startStandin(main, "write", "main");
  replicaApp = startStandin(replica1, "read", "replica1");
  await Promise.all([waitUp(mainApp), waitUp(replicaApp)]);
}, 600_000);

afterAll(async () => {
  await net?.destroy();
});

const adminCli = (args: string[]) =>
  redisCli(net.host("main"), { address: net.host("main").ip, port: 6380, caFile: ca.certFile }, args, { auth: users.admin }).then((r) => r.stdout.trim());

describe("the stand-in app against real servers, wired as the program wires the app", () => {
  it("write mode: healthy only with its database and Redis answering; it created its table on the primary, owned by the app's role", async () => {
    const h = await health(mainApp);
    expect(h.code).toBe(200);
    expect(h.body.status).toBe("UP");
    expect(h.body.components.db).toMatchObject({ status: "UP", details: { standby: false, schema: "current" } });
    expect(h.body.components.redis).toMatchObject({ status: "UP", details: { tls: true } });
    expect(await primary.value("SELECT tableowner FROM pg_tables WHERE tablename = 'synaxic_standin_visits'", cluster.roles.appDatabase)).toBe(cluster.roles.app.name);
  });

  it("write mode: a visit is a row on the primary and a key in Redis, written as the app's ACL user over verified TLS", async () => {
    const post = async () => (await fetch(`${mainApp.url}/v1/visits`, { method: "POST" })).json() as Promise<{ mode: string; visits: number; redisVisits: number }>;
    const a = await post();
    const b = await post();
    expect(a.mode).toBe("write");
    expect(b.visits).toBe(a.visits + 1);
    expect(b.redisVisits).toBe(a.redisVisits + 1);
    expect(await primary.value("SELECT count FROM synaxic_standin_visits WHERE id = 1", cluster.roles.appDatabase)).toBe(String(b.visits));
    expect(await adminCli(["GET", "synaxic:standin:visits"])).toBe(String(b.redisVisits));
    // Redis listens on TLS only (port 0), so every client here came over TLS; the app's are its ACL user.
    const clients = await adminCli(["CLIENT", "LIST"]);
    expect(clients).toMatch(new RegExp(`addr=${net.host("main").ip.replace(/\./g, "\\.")}:\\d+ .*user=${users.app.name}`));
    expect(clients).toMatch(new RegExp(`addr=${net.host("replica1").ip.replace(/\./g, "\\.")}:\\d+ .*user=${users.app.name}`));
    const metrics = await (await fetch(`${mainApp.url}/actuator/prometheus`)).text();
    expect(metrics).toMatch(/^synaxic_standin_visits_written_total 2$/m);
    expect(metrics).toMatch(/^synaxic_standin_info\{mode="write"\} 1$/m);
    expect(metrics).toMatch(/^synaxic_standin_component_up\{component="redis"\} 1$/m);
  });

  it("read mode: reads the count from its local standby (and Redis from the master); a write fails with SQLSTATE 25006, as the app's does on a standby", async () => {
    const h = await health(replicaApp);
    expect(h.body.components.db).toMatchObject({ status: "UP", details: { standby: true, schema: "current" } });
    const written = Number(await primary.value("SELECT count FROM synaxic_standin_visits WHERE id = 1", cluster.roles.appDatabase));
    const seen = await waitFor("the standby to replay the visits", async () => {
      const r = (await (await fetch(`${replicaApp.url}/v1/visits`)).json()) as { mode: string; visits: number; redisVisits: number };
      return r.visits === written ? r : false;
    }, 30_000, 200);
    expect(seen).toMatchObject({ mode: "read", visits: written, redisVisits: written });
    const w = await fetch(`${replicaApp.url}/v1/visits`, { method: "POST" });
    expect(w.status).toBe(500);
    expect(await w.json()).toMatchObject({ mode: "read", sqlState: "25006" });
    // Nothing reached Redis either: the database write comes first.
    expect(await adminCli(["GET", "synaxic:standin:visits"])).toBe(String(written));
  });

  it("health follows Redis: DOWN (503) while the master is stopped, UP again once it is back", async () => {
    await redis.stop();
    try {
      const down = await waitFor("health DOWN", async () => {
        const h = await health(mainApp);
        return h.body.status === "DOWN" ? h : false;
      }, 20_000, 250);
      expect(down.code).toBe(503);
      expect(down.body.components.redis!.status).toBe("DOWN");
      expect(down.body.components.db!.status).toBe("UP");
    } finally {
      await redis.start();
    }
    await waitUp(mainApp);
  });

  it("health follows PostgreSQL: the read-mode app is DOWN while its standby is stopped", async () => {
    await standby.stop();
    try {
      const down = await waitFor("health DOWN", async () => {
        const h = await health(replicaApp);
        return h.body.status === "DOWN" ? h : false;
      }, 20_000, 250);
      expect(down.code).toBe(503);
      expect(down.body.components.db!.status).toBe("DOWN");
    } finally {
      await standby.startReplica("replica", primary);
    }
    await waitUp(replicaApp);
  });

  it("verifies Redis's certificate against the truststore's CA: with another CA, or an address the certificate does not name, Redis is DOWN", async () => {
    const other = makeCa("other-ca", net.mkdir("other-ca"));
    const otherStore = join(net.dir, "other-truststore.p12");
    net.writeFile(otherStore, buildTruststore([other.certPem], truststorePassword), 0o400);
    const wrongCa = startStandin(net.host("main"), "write", "wrong-ca", { truststore: otherStore, port: 8081 });
    // 127.0.0.1 reaches the same server, but its certificate names only the main host's address.
    const wrongName = startStandin(net.host("main"), "write", "wrong-name", { redisHost: "127.0.0.1", port: 8082 });
    for (const [app, message] of [
      [wrongCa, /self[- ]signed certificate|unable to verify|unable to get local issuer/i],
      [wrongName, /IP: 127\.0\.0\.1 is not in the cert's list/],
    ] as const) {
      const h = await waitFor("a health answer", async () => health(app).catch(() => undefined), 30_000, 250);
      expect(h.code).toBe(503);
      expect(h.body.components.redis!.status).toBe("DOWN");
      await waitFor("the TLS refusal in the log", async () => message.test(net.readLog(app.log)), 20_000, 250);
      app.proc.kill("SIGTERM");
    }
  });

  it("verifies PostgreSQL's certificate (verify-full): with another CA, the database is DOWN", async () => {
    const other = makeCa("other-pg-ca", net.mkdir("other-pg-ca"));
    const app = startStandin(net.host("main"), "write", "wrong-pg-ca", { pgCa: other.certFile, port: 8083 });
    const h = await waitFor("a health answer", async () => health(app).catch(() => undefined), 30_000, 250);
    expect(h.code).toBe(503);
    expect(h.body.components.db!.status).toBe("DOWN");
    expect(String(h.body.components.db!.details?.error)).toMatch(/certificate/i);
    app.proc.kill("SIGTERM");
  });

  it("stops at once, naming the problem, without its required config tree or with a truststore password that does not open the store", async () => {
    const noTree = await exited(startStandin(net.host("main"), "write", "no-tree", { noConfigTree: true, port: 8084 }));
    expect(noTree.code).toBe(1);
    expect(noTree.log).toMatch(/config data location 'configtree:.*' does not exist/);
    const badPassword = await exited(startStandin(net.host("main"), "write", "bad-password", { truststorePassword: "not-the-password", port: 8085 }));
    expect(badPassword.code).toBe(1);
    expect(badPassword.log).toMatch(/the Redis truststore .* cannot be opened with REDIS_TRUSTSTORE_PASSWORD/);
    // No secret in what it printed.
    for (const log of [net.readLog(mainApp.log), net.readLog(replicaApp.log), badPassword.log]) {
      for (const secret of [cluster.roles.app.password, users.app.password, truststorePassword]) expect(log).not.toContain(secret);
    }
  });
});
