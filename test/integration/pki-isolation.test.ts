/**
 * One CA per service (components/Pki.ts), on real Redis servers started from
 * the rendered redis.conf: a replica whose tls-ca-cert-file holds the Redis
 * CA alone refuses a master that presents the same host's PostgreSQL
 * certificate (PostgreSQL CA) or its exporters' certificate (metrics CA),
 * though each names the master's address, and syncs with the Redis-CA one.
 * Redis checks no host name on a replication link (redis/redis src/tls.c:
 * connTLSConnect sets SNI only; createSSLContext verifies the chain), so
 * the CA is all that tells these certificates apart. On the master's side,
 * with tls-auth-clients optional, a client offering another service's
 * certificate is refused at the handshake, one offering none (the app) is
 * let in to its ACL password.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type CertFiles, type TestCa } from "../rig/pki";
import { randomRedisUsers, redisCli, redisInfo, redisOk, RedisServer, waitInSync } from "../rig/redis";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";

describe("per-service CAs: a Redis replica trusts the Redis CA only", () => {
  let net: TestNet;
  let redisCa: TestCa;
  let postgresCa: TestCa;
  let metricsCa: TestCa;
  let main: Host;
  let replicaHost: Host;
  let client: Host;
  /** main's certificates, each as components/Pki.ts issues it: same host, same address, another CA. */
  let mainRedis: CertFiles;
  let mainPostgres: CertFiles;
  let mainExporters: CertFiles;
  let replicaRedis: CertFiles;
  const users = randomRedisUsers();
  const acl = renderRedisAcl(users);
  const timing = { replPingReplicaPeriod: 1, replTimeout: 3 } as const;

  const masterConf = (s: RedisServer) => renderRedisConf({ role: "master", bind: [s.host.ip, "127.0.0.1"], port: s.port, ...s.paths, ...timing });
  const replicaConf = (s: RedisServer, masterPort: number) =>
    renderRedisConf({
      role: "replica",
      bind: [s.host.ip, "127.0.0.1"],
      port: s.port,
      ...s.paths,
      ...timing,
      announce: { ip: s.host.ip, port: s.port },
      masterHost: main.ip,
      masterPort,
      masterUser: users.replication.name,
      masterPassword: users.replication.password,
    });
  /** A Redis master on main presenting `cert`, trusting the Redis CA (as every Redis of the fleet). */
  const masterWith = async (label: string, cert: CertFiles, issuer: TestCa, port: number) => {
    const m = RedisServer.create(net, main, label, { caPem: redisCa.certPem, certPem: cert.certPem, keyPem: cert.keyPem }, port);
    await m.start(masterConf(m), acl);
    // Written by a client that trusts the certificate's own issuer.
    const w = await redisCli(main, { ...m.localTarget, caFile: issuer.certFile }, ["SET", "served-by", label], { auth: users.app });
    expect(w.out).toBe("OK");
    return m;
  };
  /** A replica on the replica host with the Redis CA alone in its tls-ca-cert-file, following main's `port`. */
  const replicaOf = async (label: string, masterPort: number, port: number) => {
    const r = RedisServer.create(net, replicaHost, label, { caPem: redisCa.certPem, certPem: replicaRedis.certPem, keyPem: replicaRedis.keyPem }, port);
    await r.start(replicaConf(r, masterPort), acl);
    return r;
  };

  beforeAll(async () => {
    net = await TestNet.create(["pkis-main", "pkis-replica", "pkis-client"]);
    main = net.host("pkis-main");
    replicaHost = net.host("pkis-replica");
    client = net.host("pkis-client");
    redisCa = makeCa("redis-ca", net.mkdir("redis-pki"));
    postgresCa = makeCa("postgres-ca", net.mkdir("postgres-pki"));
    metricsCa = makeCa("metrics-ca", net.mkdir("metrics-pki"));
    const names = [main.ip, "main", "127.0.0.1", "localhost"];
    mainRedis = redisCa.issue("main-redis", names, "redis.main");
    mainPostgres = postgresCa.issue("main-postgres", names, "postgres.main");
    mainExporters = metricsCa.issue("main-exporters", [main.ip, "main", "127.0.0.1", "localhost"], "exporters.main", "server");
    replicaRedis = redisCa.issue("replica-redis", [replicaHost.ip, "replica", "127.0.0.1", "localhost"], "redis.replica");
  });

  afterAll(async () => {
    await net?.destroy();
  });

  it.each([
    ["its PostgreSQL certificate (PostgreSQL CA)", () => [mainPostgres, postgresCa] as const, 6390],
    ["its exporters' certificate (metrics CA)", () => [mainExporters, metricsCa] as const, 6391],
  ])("refuses a master on main's address presenting %s", async (what, pick, port) => {
    const [cert, issuer] = pick();
    const impostor = await masterWith(`impostor-${port}`, cert, issuer, port);
    const victim = await replicaOf(`victim-${port}`, port, port + 100);
    await waitFor(`the replica's TLS handshake with the master presenting ${what} to fail`, async () => /certificate verify failed/i.test(victim.log()), 20_000, 200);
    expect((await redisInfo(replicaHost, victim.localTarget, "replication", users.app)).master_link_status).toBe("down");
    expect((await redisInfo(main, { ...impostor.localTarget, caFile: issuer.certFile }, "replication", users.app)).connected_slaves).toBe("0");
    expect((await redisCli(replicaHost, victim.localTarget, ["EXISTS", "served-by"], { auth: users.app })).out).toBe("0");
    await victim.stop();
    await impostor.stop();
  });

  it("syncs with the master presenting main's Redis certificate (Redis CA): the control for the refusals", async () => {
    const master = await masterWith("master", mainRedis, redisCa, 6380);
    const replica = await replicaOf("replica", 6380, 6380);
    const { replica: r } = await waitInSync(client, master.target, replica.target, users.admin);
    expect(r.master_link_status).toBe("up");
    expect(await redisOk(client, replica.target, ["GET", "served-by"], users.app)).toBe("master");
    expect(replica.log()).not.toMatch(/certificate verify failed/i);
  });

  it("the master refuses a client offering another service's certificate, and lets in one offering none (the app) or a Redis-CA one", async () => {
    const target = { address: main.ip, port: 6380, caFile: redisCa.certFile };
    for (const other of [mainPostgres, postgresCa.issue("client-postgres", [client.ip], "postgres.client")]) {
      const r = await redisCli(client, target, ["PING"], { auth: users.app, clientCert: other });
      expect(r.out).not.toMatch(/PONG/);
      expect(r.code).not.toBe(0);
    }
    // The app presents no client certificate: tls-auth-clients optional lets it in to its password.
    expect((await redisCli(client, target, ["PING"], { auth: users.app })).out).toBe("PONG");
    expect((await redisCli(client, target, ["PING"], { auth: users.app, clientCert: replicaRedis })).out).toBe("PONG");
  });
});
