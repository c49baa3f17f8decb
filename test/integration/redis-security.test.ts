/**
 * A Redis master started from the rendered redis.conf and users.acl (host
 * "main"), probed from another host ("client"): TLS only, authentication
 * required, the default user off, each ACL user limited to its job, and
 * redis_exporter able to scrape with its user.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type TestCa } from "../rig/pki";
import { randomRedisUsers, redisCli, redisInfo, redisOk, RedisServer } from "../rig/redis";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";

describe("redis master: TLS, authentication, ACL users", () => {
  let net: TestNet;
  let ca: TestCa;
  let otherCa: TestCa;
  let main: Host;
  let client: Host;
  let master: RedisServer;
  const users = randomRedisUsers();

  beforeAll(async () => {
    net = await TestNet.create(["main", "client"]);
    main = net.host("main");
    client = net.host("client");
    ca = makeCa("redis-ca", net.mkdir("pki"));
    otherCa = makeCa("other-ca", net.mkdir("other-pki"));
    const cert = ca.issue("redis-main", [main.ip, "redis-main.synaxic.test"]);
    master = RedisServer.create(net, main, "master", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
    await master.start(
      renderRedisConf({ role: "master", bind: [main.ip, "127.0.0.1"], ...master.paths }),
      renderRedisAcl(users),
    );
  });

  afterAll(async () => {
    await net?.destroy();
  });

  it("accepts TLS with the app user (control for the refusals below)", async () => {
    expect(await redisOk(client, master.target, ["PING"], users.app)).toBe("PONG");
  });

  it("refuses plain-text connections on the TLS port and has no port 6379", async () => {
    const onTls = await redisCli(client, master.target, ["PING"], { tls: false, auth: users.app });
    expect(onTls.out).not.toMatch(/PONG/);
    expect(onTls.code).not.toBe(0);
    expect(onTls.out).toMatch(/I\/O error|Connection reset by peer/);
    const onDefault = await redisCli(client, { ...master.target, port: 6379 }, ["PING"], { tls: false, auth: users.app });
    expect(onDefault.out).toMatch(/Connection refused/);
  });

  it("answers NOAUTH without credentials and WRONGPASS with a bad password", async () => {
    const noAuth = await redisCli(client, master.target, ["GET", "x"]);
    expect(noAuth.out).toMatch(/^NOAUTH /);
    const bad = await redisCli(client, master.target, ["GET", "x"], { auth: { user: users.app.name, pass: `${users.app.pass}x` } });
    expect(bad.out).toMatch(/WRONGPASS/);
    expect(bad.out).toMatch(/NOAUTH/);
  });

  it("refuses a client that trusts a different CA", async () => {
    const r = await redisCli(client, master.target, ["PING"], { auth: users.app, caFile: otherCa.certFile });
    expect(r.out).not.toMatch(/PONG/);
    expect(r.out).toMatch(/certificate verify failed/i);
  });

  it("has the default user switched off", async () => {
    for (const pass of ["x", "nopass", users.app.pass]) {
      const r = await redisCli(client, master.target, ["AUTH", "default", pass]);
      expect(r.out).toMatch(/WRONGPASS/);
    }
    const list = await redisOk(client, master.target, ["ACL", "LIST"], users.admin);
    // Off and without a password (no one can be it), with every permission for the AOF replay (see REDIS_ACL_RULES.default).
    expect(list).toMatch(/^user default off (sanitize-payload )?~\* &\* \+@all$/m);
  });

  it("a script's writes and plain writes both survive a crash and the AOF replay (the default user's rules)", async () => {
    const app = users.app;
    // Redis 7 writes a script's effects to the AOF as MULTI ... EXEC.
    expect(await redisOk(client, master.target, ["EVAL", "redis.call('SET', KEYS[1], '1'); redis.call('SET', KEYS[2], '2'); return 'ok'", "2", "tx:a", "tx:b"], app)).toBe("ok");
    expect(await redisOk(client, master.target, ["SET", "plain:c", "3"], app)).toBe("OK");
    // appendfsync everysec: past the next fsync, then a crash.
    await new Promise((r) => setTimeout(r, 1500));
    await master.restart("SIGKILL");
    for (const [k, v] of [["tx:a", "1"], ["tx:b", "2"], ["plain:c", "3"]]) expect(await redisOk(client, master.target, ["GET", k!], app), k).toBe(v);
  });

  it("lets the app user do data commands", async () => {
    const app = users.app;
    expect(await redisOk(client, master.target, ["SET", "k", "v", "EX", "60"], app)).toBe("OK");
    expect(await redisOk(client, master.target, ["GET", "k"], app)).toBe("v");
    expect(await redisOk(client, master.target, ["HSET", "h", "f", "1"], app)).toBe("1");
    expect(await redisOk(client, master.target, ["INCR", "counter"], app)).toBe("1");
    expect(await redisOk(client, master.target, ["EXPIRE", "counter", "60"], app)).toBe("1");
    expect(await redisOk(client, master.target, ["SCAN", "0", "MATCH", "k", "COUNT", "100"], app)).toMatch(/\bk$/m);
    expect(await redisOk(client, master.target, ["EVAL", "return redis.call('GET', KEYS[1])", "1", "k"], app)).toBe("v");
    expect(await redisOk(client, master.target, ["PUBLISH", "events", "hello"], app)).toBe("0");
    // What a Redisson client needs beyond data commands: scripts by hash (locks, rate limiters), client names, transactions.
    const sha = await redisOk(client, master.target, ["SCRIPT", "LOAD", "return redis.call('INCR', KEYS[1])"], app);
    expect(await redisOk(client, master.target, ["EVALSHA", sha, "1", "counter2"], app)).toBe("1");
    expect(await redisOk(client, master.target, ["SCRIPT", "EXISTS", sha], app)).toBe("1");
    expect(await redisOk(client, master.target, ["CLIENT", "SETNAME", "synaxic-app"], app)).toBe("OK");
    expect(await redisOk(client, master.target, ["DEL", "counter2"], app)).toBe("1");
    expect(await redisOk(client, master.target, ["DEL", "k", "h", "counter"], app)).toBe("3");
    // INFO is @dangerous but given back: Spring Boot's health check runs it.
    expect(await redisOk(client, master.target, ["INFO", "server"], app)).toMatch(/redis_version:7\.0\./);
  });

  it("denies the app user dangerous commands", async () => {
    const denied = [
      ["FLUSHALL"], ["FLUSHDB"], ["CONFIG", "GET", "*"], ["CONFIG", "SET", "appendonly", "no"], ["DEBUG", "SLEEP", "0"],
      ["KEYS", "*"], ["SHUTDOWN", "NOSAVE"], ["MONITOR"], ["REPLICAOF", "NO", "ONE"], ["ACL", "LIST"], ["BGSAVE"],
      ["CLIENT", "KILL", "TYPE", "normal"], ["MODULE", "LIST"], ["SAVE"],
      // Code that outlives the caller, other clients' scripts, other databases, values copied wholesale.
      ["FUNCTION", "LIST"], ["FUNCTION", "FLUSH"], ["SCRIPT", "FLUSH"], ["SCRIPT", "KILL"], ["SELECT", "1"], ["MOVE", "k", "1"],
      ["COPY", "k", "k2", "DB", "1"], ["SWAPDB", "0", "1"], ["DUMP", "k"], ["RESTORE", "k3", "0", "x"],
    ];
    for (const argv of denied) {
      const r = await redisCli(client, master.target, argv, { auth: users.app });
      // DEBUG and MODULE are also switched off for everyone (enable-*-command no), which Redis checks first.
      expect(r.out, argv.join(" ")).toMatch(/^(NOPERM |ERR (DEBUG|MODULE) command not allowed)/);
      // The ACL denies each of them on its own, whatever the server-wide switches say.
      const dry = await redisOk(client, master.target, ["ACL", "DRYRUN", users.app.name, ...argv], users.admin);
      expect(dry, argv.join(" ")).toMatch(/^This user has no permissions to run the '[a-z|]+' command$/);
    }
    // The server is still up and the data still there after all that.
    expect(await redisOk(client, master.target, ["PING"], users.app)).toBe("PONG");
  });

  it("lets the replication user do nothing but replication", async () => {
    await redisOk(client, master.target, ["SET", "secret", "s3"], users.app);
    for (const argv of [["GET", "secret"], ["SET", "secret", "x"], ["SCAN", "0"], ["KEYS", "*"], ["INFO"], ["CONFIG", "GET", "*"], ["SUBSCRIBE", "events"]]) {
      const r = await redisCli(client, master.target, argv, { auth: users.replication });
      expect(r.out, argv.join(" ")).toMatch(/^NOPERM /);
    }
    expect(await redisOk(client, master.target, ["PING"], users.replication)).toBe("PONG");
  });

  it("lets redis_exporter scrape with its user and nothing more", async () => {
    // Start from an empty ACL log so that only the exporter's denials count.
    await redisOk(client, master.target, ["ACL", "LOG", "RESET"], users.admin);
    const listen = `${client.ip}:9121`;
    const exporter = client.spawnDaemon("redis-exporter", [
      "prometheus-redis-exporter",
      "--redis.addr", `rediss://${main.ip}:6380`,
      "--redis.user", users.exporter.name,
      "--tls-ca-cert-file", ca.certFile,
      "--config-command", "-",
      "--web.listen-address", listen,
    ], { env: { REDIS_PASSWORD: users.exporter.pass } });
    try {
      const metrics = await waitFor("exporter metrics", async () => {
        const res = await fetch(`http://${listen}/metrics`);
        const text = await res.text();
        return /^redis_up /m.test(text) ? text : undefined;
      }, 15_000, 200);
      expect(metrics).toMatch(/^redis_up 1$/m);
      expect(metrics).toMatch(/^redis_exporter_last_scrape_error\{err=""\} 0$/m);
      expect(metrics).toMatch(/^redis_connected_clients \d+$/m);
      expect(metrics).toMatch(/^redis_slowlog_length \d+$/m);
      // SLOWLOG GET would show it other clients' arguments: the exporter is refused it, scrapes without it
      // (no redis_slowlog_last_id), and that refusal is the only one it meets.
      expect(metrics).not.toMatch(/^redis_slowlog_last_id /m);
      const log = await redisOk(client, master.target, ["ACL", "LOG"], users.admin);
      const denials = [...log.matchAll(/^object\n(\S+)\n/gm)].map((m) => m[1]);
      expect(log).toContain(users.exporter.name);
      expect(new Set(denials)).toEqual(new Set(["slowlog|get"]));
    } finally {
      process.kill(-exporter.proc.pid!, "SIGKILL");
    }
    for (const argv of [["GET", "secret"], ["CONFIG", "GET", "masterauth"], ["SCAN", "0"], ["FLUSHALL"], ["SLOWLOG", "GET", "10"]]) {
      const r = await redisCli(client, master.target, argv, { auth: users.exporter });
      expect(r.out, argv.join(" ")).toMatch(/^NOPERM /);
    }
  });

  it("at its memory limit it keeps serving writes: keys that expire are evicted, keys without a TTL kept", async () => {
    const app = users.app;
    // The budget's setting, small enough to reach here: restart the master with it.
    await master.restart("SIGTERM", renderRedisConf({ role: "master", bind: [main.ip, "127.0.0.1"], ...master.paths, maxmemory: "8mb" }));
    expect(await redisOk(client, master.target, ["SET", "keep:config", "no ttl"], app)).toBe("OK");
    const value = "v".repeat(4096);
    for (let batch = 0; batch < 8; batch++) {
      // 500 session-like keys with a TTL per batch: 16 MB in all, twice the limit.
      const script = `for i = 1, 500 do redis.call('SET', 'session:' .. ARGV[1] .. ':' .. i, ARGV[2], 'EX', 3600) end return 'ok'`;
      expect(await redisOk(client, master.target, ["EVAL", script, "0", String(batch), value], app), `batch ${batch}`).toBe("ok");
    }
    const info = await redisInfo(client, master.target, "all", users.admin);
    expect(Number(info.evicted_keys)).toBeGreaterThan(0);
    expect(Number(info.used_memory)).toBeLessThanOrEqual(8 * 1024 * 1024 * 1.05);
    expect(info.maxmemory_policy).toBe("volatile-lru");
    expect(await redisOk(client, master.target, ["GET", "keep:config"], app)).toBe("no ttl");
    expect(await redisOk(client, master.target, ["SET", "after", "still writable", "EX", "60"], app)).toBe("OK");
  });
});
