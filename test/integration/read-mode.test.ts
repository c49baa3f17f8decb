/**
 * The app in read mode, on real servers: a PostgreSQL primary on "main" and a
 * streaming standby on "replica1", an app stub on each host that writes to
 * its one database where the real app does on requests that read (the
 * Google login callback creates the user; every API-key request records the
 * key's usage afterwards), and the rendered nginx.conf on a real nginx in
 * front of both. Shows what the balancer's routing (balancerWritePaths,
 * balancerApiKeyRequests) guarantees, and measures what is lost without it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { TestNet, waitFor } from "../rig/net";
import { AppStub } from "../rig/appStub";
import { NginxInstance, sendLoad } from "../rig/nginx";
import { makeCa } from "../rig/pki";
import { PgCluster, PgNode, startPrimaryWithRoles } from "../rig/postgres";
import { DEFAULT_WRITE_PATHS, renderNginxConf, type NginxParams } from "../../templates/nginx";

const APP_PORT = 8080;

let net: TestNet;
let cluster: PgCluster;
let primary: PgNode;
let standby: PgNode;
let mainApp: AppStub;
let replicaApp: AppStub;
let nginx: NginxInstance;
let base: string;

function params(extra: Partial<NginxParams> = {}): NginxParams {
  return {
    mainApp: { name: "main", address: mainApp.address },
    replicaApps: [{ name: "replica1", address: replicaApp.address }],
    listenPort: 80,
    ...nginx.paths,
    ...extra,
  };
}

/** Restarts nginx with another rendering of the configuration. */
async function restartWith(extra: Partial<NginxParams> = {}): Promise<void> {
  await nginx.stop();
  nginx.writeConf(renderNginxConf(params(extra)));
  const t = await nginx.test();
  expect(t.code, t.stderr).toBe(0);
  await nginx.start(`${base}/nginx-health`);
}

async function usageOnPrimary(key: string): Promise<number> {
  const v = await primary.value(`SELECT coalesce((SELECT requests FROM api_key_usage WHERE api_key = '${key}'), 0)`, cluster.roles.appDatabase);
  return Number(v);
}

/** Waits until both stubs have finished recording the usage they queued. */
async function usageSettled(): Promise<void> {
  await waitFor("usage recording to finish", async () => {
    const [a, b] = await Promise.all([mainApp.stats(), replicaApp.stats()]);
    return a.usagePending === 0 && b.usagePending === 0;
  }, 30_000, 100);
}

beforeAll(async () => {
  net = await TestNet.create(["main", "replica1"]);
  const ca = makeCa("read-mode-ca", net.mkdir("ca"));
  const main = net.host("main");
  const replica1 = net.host("replica1");
  cluster = new PgCluster({ net, ca, dbHosts: [main, replica1], appHosts: [main, replica1], exporterHosts: [] });
  primary = cluster.node(main);
  standby = cluster.node(replica1);
  await startPrimaryWithRoles(primary);
  const app = cluster.roles.app.name;
  await primary.psql(
    [
      `CREATE TABLE app_users (login text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now());`,
      `CREATE TABLE api_key_usage (api_key text PRIMARY KEY, requests bigint NOT NULL);`,
      `ALTER TABLE app_users OWNER TO ${app};`,
      `ALTER TABLE api_key_usage OWNER TO ${app};`,
    ].join("\n"),
    { db: cluster.roles.appDatabase },
  );
  await standby.startReplica("replica", primary);
  await primary.waitStreaming(standby);

  // Each app has one datasource: its own host's server, as the program wires it.
  const dir = net.mkdir("apps");
  const psql = join(cluster.bin, "psql");
  mainApp = new AppStub(main, "main", APP_PORT, dir, { psql, conninfo: cluster.conninfo(primary) });
  replicaApp = new AppStub(replica1, "replica1", APP_PORT, dir, { psql, conninfo: cluster.conninfo(standby) });
  await Promise.all([mainApp.start(), replicaApp.start()]);

  nginx = new NginxInstance(main);
  base = `http://${main.ip}`;
  nginx.writeConf(renderNginxConf(params()));
  const t = await nginx.test();
  expect(t.code, t.stderr).toBe(0);
  await nginx.start(`${base}/nginx-health`);
});

afterAll(async () => {
  await nginx?.dispose();
  await net?.destroy();
});

describe("the app in read mode behind the balancer", () => {
  it("the stub does what the real app does on a standby: a login callback sent straight to the replica app fails with SQLSTATE 25006", async () => {
    const r = await fetch(`${replicaApp.url}/login/oauth2/code/google?code=direct_${Date.now()}`);
    expect(r.status).toBe(500);
    expect(((await r.json()) as { sqlstate: string }).sqlstate).toBe("25006");
    // And the same request on the main app creates the user.
    const ok = await fetch(`${mainApp.url}/login/oauth2/code/google?code=direct_main`);
    expect(ok.status).toBe(200);
  });

  it("through the balancer, every Google login callback reaches the writing app and creates its user", async () => {
    const codes = Array.from({ length: 40 }, (_, i) => `login_${i}_${Date.now()}`);
    const statuses = await Promise.all(codes.map(async (c) => (await fetch(`${base}/login/oauth2/code/google?code=${c}`)).status));
    expect(statuses.every((s) => s === 200)).toBe(true);
    const created = await primary.value(`SELECT count(*) FROM app_users WHERE login = ANY ('{${codes.join(",")}}')`, cluster.roles.appDatabase);
    expect(Number(created)).toBe(codes.length);
  });

  it.each(DEFAULT_WRITE_PATHS.map((p) => [p]))("GET %s goes to the writing app", async (prefix) => {
    const path = prefix.endsWith("/") ? `${prefix}x` : prefix;
    const r = await sendLoad(base, { method: "GET", path, count: 20, concurrency: 4 });
    expect(r.errors).toBe(0);
    expect(r.byHost).toEqual({ main: 20 });
  });

  it("requests with an API key, in each form the app reads, reach the writing app: every request's usage is recorded; other reads still spread", async () => {
    const key = `k${Date.now()}`;
    const forms: Record<string, string>[] = [{ authorization: `ApiKey ${key}` }, { "x-api-key": key }];
    const bare = `syn_live_${key}`;
    const results = await Promise.all([
      ...forms.map((headers) => sendLoad(base, { method: "GET", path: "/v1/ip", count: 50, concurrency: 8, headers })),
      sendLoad(base, { method: "GET", path: "/v1/ip", count: 50, concurrency: 8, headers: { authorization: bare } }),
    ]);
    for (const r of results) {
      expect(r.errors).toBe(0);
      expect(r.byHost).toEqual({ main: 50 });
    }
    await usageSettled();
    expect(await usageOnPrimary(key)).toBe(100);
    expect(await usageOnPrimary(bare)).toBe(50);
    expect((await replicaApp.stats()).usageFailures).toBe(0);

    const anonymous = await sendLoad(base, { method: "GET", path: "/v1/ip", count: 200, concurrency: 8 });
    expect(anonymous.errors).toBe(0);
    expect(anonymous.byHost.main).toBeGreaterThan(0);
    expect(anonymous.byHost.replica1).toBeGreaterThan(0);
  });

  it("with balancerApiKeyRequests replicas, API-key requests spread and the usage of those the replica app serves is lost (measured)", async () => {
    await restartWith({ apiKeyRequests: "replicas" });
    await mainApp.reset();
    await replicaApp.reset();
    const key = `spread${Date.now()}`;
    const n = 200;
    const r = await sendLoad(base, { method: "GET", path: "/v1/ip", count: n, concurrency: 8, headers: { "x-api-key": key } });
    expect(r.errors).toBe(0);
    await usageSettled();
    const recorded = await usageOnPrimary(key);
    const failures = (await replicaApp.stats()).usageFailures;
    process.stdout.write(`[read-mode] apiKeyRequests replicas: ${n} requests, main app ${r.byHost.main ?? 0}, replica app ${r.byHost.replica1 ?? 0}; usage recorded ${recorded}, lost ${failures}\n`);
    expect(r.byHost.replica1).toBeGreaterThan(0);
    expect(recorded).toBe(r.byHost.main);
    expect(failures).toBe(r.byHost.replica1);
    expect(recorded + failures).toBe(n);
    await restartWith();
  });
});
