/**
 * A password rotation's rendered steps on real servers: PostgreSQL 15 (the
 * roles script, as the roles step pipes it to psql) and Redis 7.0 with TLS and
 * ACL users (the users script in its "add" and "sync" modes, as the users steps
 * run it). A client that authenticated before the change holds its session
 * open throughout; new connections show which passwords are accepted when.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestNet, type Host } from "../rig/net";
import { PipeSession, psqlBackend, redisEcho } from "../rig/session";
import { makeCa, type TestCa } from "../rig/pki";
import { PgCluster, PgNode, startPrimaryWithRoles } from "../rig/postgres";
import { randomRedisUsers, redisCli, RedisServer } from "../rig/redis";
import { psqlScriptArgv, renderRolesSql } from "../../templates/postgres-sql";
import { renderPgpass } from "../../templates/postgres-hba";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";
import { renderRedisUsersScript } from "../../templates/redis-users";

let net: TestNet;
let ca: TestCa;
let db: Host;
let app: Host;

beforeAll(async () => {
  net = await TestNet.create(["rot-db", "rot-app"]);
  db = net.host("rot-db");
  app = net.host("rot-app");
  ca = makeCa("rot-ca", net.mkdir("ca"));
}, 60_000);

afterAll(async () => {
  await net?.destroy();
});

describe("postgresApp: the roles step with a new password, under a client already connected", () => {
  let cluster: PgCluster;
  let primary: PgNode;
  let session: PipeSession;
  const passfile = (name: string, password: string) => {
    const file = join(net.mkdir(`pgpass-${name}`), "pgpass");
    writeFileSync(file, renderPgpass([{ host: "*", port: "*", user: cluster.roles.app.name, password }]), { mode: 0o600 });
    return file;
  };
  const connectWith = (file: string) => cluster.remotePsql(app, cluster.conninfo(primary, { passfile: file }), "SELECT current_user;", { allowFail: true });
  let oldFile: string;
  let seq = 0;
  const query = () => psqlBackend(session, String(++seq));

  beforeAll(async () => {
    cluster = new PgCluster({ net, ca, dbHosts: [db], appHosts: [app], exporterHosts: [] });
    primary = cluster.node(db);
    await startPrimaryWithRoles(primary);
    oldFile = passfile("old", cluster.roles.app.password);
    // The running app's pooled connection: authenticated with the old password.
    session = new PipeSession(["ip", "netns", "exec", app.ns, join(cluster.bin, "psql"), "-X", "-q", "-A", "-t", "-d", cluster.conninfo(primary, { passfile: oldFile })], {}, net.procs);
  }, 120_000);

  afterAll(() => session?.close());

  it("the session keeps working across ALTER ROLE; new connections take only the new password", async () => {
    const before = await query();
    expect(before).toMatch(/^alive:synaxic:\d+$/);
    expect((await connectWith(oldFile)).code).toBe(0);

    // The roles step: the rendered script with the new password, on psql's stdin (psqlScriptArgv, as the step runs it).
    const r = cluster.roles;
    const newPassword = `${r.app.password.slice(0, 10)}Rotated${Date.now()}`;
    const argv = psqlScriptArgv({ host: primary.socketDir, port: primary.port });
    const applied = await primary.host.exec([join(cluster.bin, "psql"), ...argv.slice(1)], {
      user: "postgres",
      input: renderRolesSql({ appDatabase: r.appDatabase, app: { ...r.app, password: newPassword }, replication: r.replication, exporter: r.exporter, rewind: r.rewind }),
    });
    expect(`${applied.stdout}${applied.stderr}`).not.toContain(newPassword);

    // Same backend, still authenticated: PostgreSQL checks a password only when a connection starts.
    expect(await query()).toBe(before);
    expect(session.alive).toBe(true);
    const old = await connectWith(oldFile);
    expect(old.code).not.toBe(0);
    expect(old.stderr).toMatch(/password authentication failed for user "synaxic"/);
    const fresh = await connectWith(passfile("new", newPassword));
    expect(fresh.code).toBe(0);
    expect(fresh.stdout.trim()).toBe("synaxic");
    // Still the same session afterwards.
    expect(await query()).toBe(before);
  });
});

describe("redisApp: the users script's two-password window, under a client already connected", () => {
  let server: RedisServer;
  let session: PipeSession;
  const users = randomRedisUsers();
  const newApp = { ...users.app, password: `${users.app.password}-rotated`, pass: `${users.app.password}-rotated` };
  const target = () => server.target;
  const ping = (pass: string) => redisCli(app, target(), ["PING"], { auth: { user: users.app.name, pass } });
  const runScript = (mode: "add" | "sync", acl: string) =>
    db.exec(["sh", "-c", renderRedisUsersScript(mode, { port: server.target.port, caFile: server.caFile, adminUser: users.admin.name })], {
      input: `${users.admin.password}\n${acl}`,
      allowFail: true,
    });
  let seq = 0;
  const sessionPing = () => redisEcho(session, `alive-${++seq}`);

  beforeAll(async () => {
    const cert = ca.issue("rot-redis", [db.ip, "127.0.0.1"]);
    server = RedisServer.create(net, db, "rot", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
    await server.start(renderRedisConf({ role: "master", bind: [db.ip, "127.0.0.1"], ...server.paths }), renderRedisAcl(users));
    // The running app's connection (Redisson keeps its connections open): authenticated with the old password.
    session = new PipeSession(
      ["ip", "netns", "exec", app.ns, "redis-cli", "--tls", "--cacert", server.caFile, "-h", db.ip, "-p", String(server.target.port), "--user", users.app.name, "--no-auth-warning"],
      { REDISCLI_AUTH: users.app.password },
      net.procs,
    );
    expect(await sessionPing()).toBe(true);
  }, 60_000);

  afterAll(() => session?.close());

  it("add: both passwords are accepted and the session stays; sync: the old one is refused, the session still stays", async () => {
    const acl = renderRedisAcl({ ...users, app: newApp });

    const added = await runScript("add", acl);
    expect(added.code).toBe(0);
    expect(added.stdout).toContain(`ACL SETUSER ${users.app.name}`);
    for (const secret of [users.app.password, newApp.password, users.admin.password]) expect(`${added.stdout}${added.stderr}`).not.toContain(secret);
    expect((await ping(users.app.password)).out).toBe("PONG");
    expect((await ping(newApp.password)).out).toBe("PONG");
    expect(await sessionPing()).toBe(true);
    // The user's rules are untouched by add: still no FLUSHALL for the app.
    expect((await redisCli(app, target(), ["FLUSHALL"], { auth: { user: users.app.name, pass: newApp.password } })).out).toMatch(/NOPERM/);

    // Running add again changes nothing (a re-run after an interrupted up).
    expect((await runScript("add", acl)).code).toBe(0);

    const synced = await runScript("sync", acl);
    expect(synced.code).toBe(0);
    expect(`${synced.stdout}${synced.stderr}`).not.toContain(newApp.password);
    const refused = await ping(users.app.password);
    expect(refused.out).toMatch(/WRONGPASS|AUTH failed/);
    expect((await ping(newApp.password)).out).toBe("PONG");
    // The session authenticated with the old password is still served.
    expect(await sessionPing()).toBe(true);
    expect(session.alive).toBe(true);
    expect((await redisCli(app, target(), ["FLUSHALL"], { auth: { user: users.app.name, pass: newApp.password } })).out).toMatch(/NOPERM/);
  });

  it("sync deletes a user the file no longer lists; a wrong admin password fails the step without changing anything", async () => {
    const acl = renderRedisAcl({ ...users, app: newApp });
    const extra = `${acl}user leftover reset on #${"a".repeat(64)} -@all\n`;
    expect((await runScript("add", extra)).code).toBe(0);
    expect((await redisCli(app, target(), ["ACL", "USERS"], { auth: { user: users.admin.name, pass: users.admin.password } })).out).toContain("leftover");
    expect((await runScript("sync", acl)).code).toBe(0);
    expect((await redisCli(app, target(), ["ACL", "USERS"], { auth: { user: users.admin.name, pass: users.admin.password } })).out).not.toContain("leftover");

    const wrong = await db.exec(["sh", "-c", renderRedisUsersScript("sync", { port: server.target.port, caFile: server.caFile, adminUser: users.admin.name })], {
      input: `not-the-admin-password\n${renderRedisAcl(users)}`,
      allowFail: true,
    });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/cannot reach Redis as ops-admin: .*WRONGPASS/);
    expect((await ping(newApp.password)).out).toBe("PONG");
  });

  it("control: ACL LOAD instead would have cut the session off (why the steps use ACL SETUSER)", async () => {
    expect(await sessionPing()).toBe(true);
    writeFileSync(server.aclFile, renderRedisAcl({ ...users, app: newApp }));
    const load = await redisCli(app, target(), ["ACL", "LOAD"], { auth: { user: users.admin.name, pass: users.admin.password } });
    expect(load.out).toBe("OK");
    // Redis 7.0 frees the old users and disconnects their clients; redis-cli's reconnect authenticates with the old password and is refused.
    expect(await redisEcho(session, "after-load")).toBe(false);
  });
});
