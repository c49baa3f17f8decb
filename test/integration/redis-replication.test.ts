/**
 * Redis master (host "main") and TLS replica (host "replica1") started from
 * the rendered redis.conf and users.acl: initial sync, the diskless sync
 * delay the master runs with and a new replica's full sync, read-only
 * replica, partial resync after a link break, AOF across a master crash,
 * master certificate verification, promotion.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type CertFiles, type TestCa } from "../rig/pki";
import { dataDigest, execIn, fillWithStrings, randomRedisUsers, redisCli, redisInfo, redisOk, RedisServer, waitInSync, waitNoChild } from "../rig/redis";
import {
  REDIS_CONF_DEFAULTS,
  renderRedisAcl,
  renderRedisConf,
  renderRedisPromoteFromStdin,
  renderRedisPromoteScript,
  type RedisConfParams,
} from "../../templates/redis";

// Short link timeouts so that a cut of a few seconds really breaks the link.
// The diskless sync delay is the template's default, as deployed.
const TIMING = { replPingReplicaPeriod: 1, replTimeout: 3, replBacklogSize: "16mb" } as const;

describe("redis replication over TLS", () => {
  let net: TestNet;
  let ca: TestCa;
  let main: Host;
  let replicaHost: Host;
  let client: Host;
  let master: RedisServer;
  let replica: RedisServer;
  let mCert: CertFiles;
  let rCert: CertFiles;
  const users = randomRedisUsers();
  const acl = renderRedisAcl(users);

  const masterConf = (s: RedisServer): string =>
    renderRedisConf({ role: "master", bind: [s.host.ip, "127.0.0.1"], port: s.port, ...s.paths, ...TIMING });
  const replicaConf = (s: RedisServer, masterHost: string, masterPort = 6380): string =>
    renderRedisConf({
      role: "replica",
      bind: [s.host.ip, "127.0.0.1"],
      port: s.port,
      ...s.paths,
      ...TIMING,
      announce: { ip: s.host.ip, port: s.port },
      masterHost,
      masterPort,
      masterUser: users.replication.name,
      masterPassword: users.replication.password,
    } satisfies RedisConfParams);

  beforeAll(async () => {
    net = await TestNet.create(["main", "replica1", "client"]);
    main = net.host("main");
    replicaHost = net.host("replica1");
    client = net.host("client");
    ca = makeCa("redis-ca", net.mkdir("pki"));
    mCert = ca.issue("redis-main", [main.ip, "redis-main.synaxic.test"]);
    rCert = ca.issue("redis-replica1", [replicaHost.ip, "redis-replica1.synaxic.test"]);
    master = RedisServer.create(net, main, "master", { caPem: ca.certPem, certPem: mCert.certPem, keyPem: mCert.keyPem });
    replica = RedisServer.create(net, replicaHost, "replica", { caPem: ca.certPem, certPem: rCert.certPem, keyPem: rCert.keyPem });
    await master.start(masterConf(master), acl);
    await replica.start(replicaConf(replica, main.ip), acl);
  });

  afterAll(async () => {
    await net?.destroy();
  });

  it("syncs the replica over TLS: link up, equal offsets, equal data digest", async () => {
    const app = users.app;
    await redisOk(client, master.target, ["SET", "session:1", "alice"], app);
    await redisOk(client, master.target, ["HSET", "user:1", "name", "Alice", "lang", "fr"], app);
    // Lists and sets are not the app's (REDIS_ACL_RULES.app): the admin user writes them, and reads every type for the digests.
    await redisOk(client, master.target, ["RPUSH", "queue", "a", "b", "c"], users.admin);
    await redisOk(client, master.target, ["SADD", "tags", "x", "y"], users.admin);
    await redisOk(client, master.target, ["ZADD", "rank", "1", "m", "2.5", "n"], app);
    await redisOk(client, master.target, ["SET", "cache:ttl", "v", "EX", "3600"], app);

    const { master: m, replica: r } = await waitInSync(client, master.target, replica.target, app);
    expect(r.role).toBe("slave");
    expect(r.master_host).toBe(main.ip);
    expect(r.master_port).toBe("6380");
    expect(m.connected_slaves).toBe("1");
    // The replica announced its own address and TLS port.
    expect(m.slave0).toContain(`ip=${replicaHost.ip},port=6380,state=online`);

    const dm = await dataDigest(client, master.target, users.admin);
    const dr = await dataDigest(client, replica.target, users.admin);
    expect(dm.keys).toBe(6);
    expect(dr).toEqual(dm);
    expect(await redisOk(client, replica.target, ["HGET", "user:1", "name"], app)).toBe("Alice");
    // No plain-text replication: the master has no plain port at all.
    expect(m.master_repl_offset).toBe(r.master_repl_offset);
  });

  /** Stops a replica once it has written its first AOF after a full sync (until then Redis refuses to shut down). */
  async function stopAfterInitialAof(r: RedisServer): Promise<void> {
    if (r.running) await waitNoChild(client, r.target, users.app);
    await r.stop();
  }

  /** Starts a new, empty replica of `m` on the replica host, waits until it is in sync, and returns the master's log meanwhile. */
  async function attachNewReplica(m: RedisServer, name: string, port: number): Promise<{ log: string; replica: RedisServer }> {
    const fresh = RedisServer.create(net, replicaHost, name, { caPem: ca.certPem, certPem: rCert.certPem, keyPem: rCert.keyPem }, port);
    const logBefore = m.log().length;
    await fresh.start(replicaConf(fresh, main.ip, m.port), acl);
    await waitInSync(client, m.target, fresh.target, users.app);
    // The master logs the sync's success once the replica acknowledges it, which can come just after the offsets agree.
    const done = `Synchronization with replica ${replicaHost.ip}:${port} succeeded`;
    await waitFor(`the master to log "${done}"`, async () => m.log().slice(logBefore).includes(done), 15_000, 100);
    return { log: m.log().slice(logBefore), replica: fresh };
  }

  it("runs the master with the rendered diskless sync delay, and a new replica's full sync starts without waiting", async () => {
    // What the running master reports is what the template rendered.
    const reported = await redisOk(client, master.target, ["CONFIG", "GET", "repl-diskless-sync*"], users.admin);
    const words = reported.split("\n");
    const config: Record<string, string | undefined> = {};
    for (let i = 0; i + 1 < words.length; i += 2) config[words[i]!] = words[i + 1];
    expect(config["repl-diskless-sync"]).toBe("yes");
    expect(config["repl-diskless-sync-delay"]).toBe(String(REDIS_CONF_DEFAULTS.replDisklessSyncDelay));
    expect(config["repl-diskless-sync-max-replicas"]).toBe("0");

    // A few megabytes, so that the transfer is a real one.
    await fillWithStrings(client, master.target, users.app, { bytes: 8_000_000, prefix: "bulk" });
    const before = await redisInfo(client, master.target, "stats", users.app);
    const { log, replica: late } = await attachNewReplica(master, "late", 6382);
    try {
      // A diskless full sync of the whole data set...
      expect(log).toContain(`Replica ${replicaHost.ip}:6382 asks for synchronization`);
      expect(log).toContain("Starting BGSAVE for SYNC with target: replicas sockets");
      expect(log).toContain(`Synchronization with replica ${replicaHost.ip}:6382 succeeded`);
      expect(Number((await redisInfo(client, master.target, "stats", users.app)).sync_full)).toBe(Number(before.sync_full) + 1);
      expect(await dataDigest(client, late.target, users.admin)).toEqual(await dataDigest(client, master.target, users.admin));
      // ...that the master did not hold back waiting for more replicas (Redis logs when it does; see the control below).
      expect(log).not.toContain("Delay next BGSAVE for diskless SYNC");
    } finally {
      await stopAfterInitialAof(late);
    }
  });

  it("control: a master rendered with a delay does log that it holds the sync back", async () => {
    const delayed = RedisServer.create(net, main, "delayed", { caPem: ca.certPem, certPem: mCert.certPem, keyPem: mCert.keyPem }, 6383);
    await delayed.start(renderRedisConf({ role: "master", bind: [main.ip, "127.0.0.1"], port: delayed.port, ...delayed.paths, ...TIMING, replDisklessSyncDelay: 1 }), acl);
    try {
      expect(await redisOk(client, delayed.target, ["CONFIG", "GET", "repl-diskless-sync-delay"], users.admin)).toBe("repl-diskless-sync-delay\n1");
      const { log, replica: late } = await attachNewReplica(delayed, "late-delayed", 6384);
      await stopAfterInitialAof(late);
      expect(log).toContain("Delay next BGSAVE for diskless SYNC");
      expect(log).toContain("Starting BGSAVE for SYNC with target: replicas sockets");
    } finally {
      await delayed.stop();
    }
  });

  it("keeps the replica read-only", async () => {
    const r = await redisCli(client, replica.target, ["SET", "session:2", "bob"], { auth: users.app });
    expect(r.out).toMatch(/^READONLY /);
    expect((await redisCli(client, replica.target, ["EXISTS", "session:2"], { auth: users.app })).out).toBe("0");
  });

  it("resyncs partially, not fully, after a short link break", async () => {
    const before = await redisInfo(client, master.target, "stats", users.app);
    await replicaHost.cut();
    try {
      // Writes made while the replica is cut off go to the backlog.
      for (let i = 0; i < 50; i++) await redisOk(client, master.target, ["SET", `during-cut:${i}`, `v${i}`], users.app);
      // Wait until the replica itself has declared the link broken.
      await waitFor("replica to notice the broken link", async () => {
        const r = await redisInfo(replicaHost, replica.localTarget, "replication", users.app);
        return r.master_link_status === "down";
      }, 15_000, 250);
    } finally {
      await replicaHost.restore();
    }
    await waitInSync(client, master.target, replica.target, users.app);
    const after = await redisInfo(client, master.target, "stats", users.app);
    expect(Number(after.sync_partial_ok)).toBe(Number(before.sync_partial_ok) + 1);
    expect(after.sync_full).toBe(before.sync_full);
    expect(replica.log()).toMatch(/Successful partial resynchronization with master/);
    expect(await dataDigest(client, replica.target, users.admin)).toEqual(await dataDigest(client, master.target, users.admin));
  });

  it("keeps the master's data across a crash (AOF) and the replica follows", async () => {
    await redisOk(client, master.target, ["SET", "durable", "yes"], users.app);
    const digest = await dataDigest(client, master.target, users.admin);
    // SIGKILL: no shutdown save; only the append-only file can bring the data back.
    await master.restart("SIGKILL");
    expect(await redisOk(client, master.target, ["GET", "durable"], users.app)).toBe("yes");
    expect(await dataDigest(client, master.target, users.admin)).toEqual(digest);
    expect(master.log()).toMatch(/DB loaded from append only file/);
    await waitInSync(client, master.target, replica.target, users.app);
    expect(await dataDigest(client, replica.target, users.admin)).toEqual(digest);
  });

  it("refuses a master whose certificate is not from the fleet CA", async () => {
    // An impostor on the client host, with a certificate for its own address from another CA.
    const rogueCa = makeCa("rogue-ca", net.mkdir("rogue-pki"));
    const rogueCert = rogueCa.issue("rogue", [client.ip]);
    const rogue = RedisServer.create(net, client, "rogue", { caPem: rogueCa.certPem, certPem: rogueCert.certPem, keyPem: rogueCert.keyPem });
    await rogue.start(masterConf(rogue), acl);
    await redisOk(client, rogue.localTarget, ["SET", "rogue", "data"], users.app);
    // A second replica instance with the real fleet CA, pointed at the impostor.
    const victim = RedisServer.create(net, replicaHost, "victim", { caPem: ca.certPem, certPem: rCert.certPem, keyPem: rCert.keyPem }, 6381);
    await victim.start(replicaConf(victim, client.ip), acl);
    await waitFor("the TLS handshake with the impostor to fail", async () => /certificate verify failed/i.test(victim.log()), 15_000, 200);
    const r = await redisInfo(replicaHost, victim.localTarget, "replication", users.app);
    expect(r.master_link_status).toBe("down");
    expect((await redisInfo(client, rogue.localTarget, "replication", users.app)).connected_slaves).toBe("0");
    expect((await redisCli(replicaHost, victim.localTarget, ["EXISTS", "rogue"], { auth: users.app })).out).toBe("0");
    await victim.stop();
    await rogue.stop();
  });

  it("promotes the replica with the rendered script, keeping its data, and restarts it as a master", async () => {
    await waitInSync(client, master.target, replica.target, users.app);
    const digest = await dataDigest(client, master.target, users.admin);
    // Exactly as the deployment runs it in the container: the password on stdin only.
    const script = renderRedisPromoteFromStdin({ host: "127.0.0.1", port: replica.port, caFile: replica.caFile, user: users.admin.name });
    expect(script).not.toContain(users.admin.password);
    const run = await replicaHost.exec(["sh", "-c", script], { input: `${users.admin.password}\n`, allowFail: true });
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe("promoted");

    const r = await redisInfo(client, replica.target, "replication", users.app);
    expect(r.role).toBe("master");
    expect(await dataDigest(client, replica.target, users.admin)).toEqual(digest);
    expect(await redisOk(client, replica.target, ["SET", "written-after-promotion", "1"], users.app)).toBe("OK");

    // Then its config is rendered as a master, so a restart keeps the role and the data.
    await replica.restart("SIGTERM", masterConf(replica));
    const after = await redisInfo(client, replica.target, "replication", users.app);
    expect(after.role).toBe("master");
    expect(await redisOk(client, replica.target, ["GET", "written-after-promotion"], users.app)).toBe("1");
    expect((await dataDigest(client, replica.target, users.admin)).keys).toBe(digest.keys + 1);
  });

  it("refuses the promotion script without the admin password", async () => {
    const script = renderRedisPromoteScript({ host: "127.0.0.1", port: master.port, caFile: master.caFile, user: users.admin.name });
    const run = await execIn(main, ["sh", "-c", script], { env: { REDISCLI_AUTH: "not-the-password" } });
    expect(run.code).not.toBe(0);
    expect(`${run.stdout}${run.stderr}`).toMatch(/WRONGPASS|NOAUTH/);
    const noEnv = await execIn(main, ["env", "-u", "REDISCLI_AUTH", "sh", "-c", script]);
    expect(noEnv.code).not.toBe(0);
    expect(noEnv.stderr).toMatch(/REDISCLI_AUTH/);
  });
});
