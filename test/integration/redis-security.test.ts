/**
 * A Redis master started from the rendered redis.conf and users.acl (host
 * "racl-main"), probed from another host ("racl-client"): TLS only,
 * authentication required, the default user off, each ACL user limited to
 * its job (the app to what it sends, read from its code: APP_REDIS_COMMANDS),
 * a replica ("racl-replica") syncing with the replication user, redis_exporter
 * serving the alert rules' metrics with its user, and a runaway script
 * stopped at the busy threshold.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type TestCa } from "../rig/pki";
import { randomRedisUsers, redisCli, redisInfo, redisOk, redisPermittedCommands, RedisServer, waitInSync, type RedisTarget } from "../rig/redis";
import { APP_REDIS_COMMANDS, REDIS_CONF_DEFAULTS, renderRedisAcl, renderRedisConf } from "../../templates/redis";
import { knownMetrics } from "../../templates/prometheus";

describe("redis master: TLS, authentication, ACL users", () => {
  let net: TestNet;
  let ca: TestCa;
  let otherCa: TestCa;
  let main: Host;
  let client: Host;
  let replicaHost: Host;
  let master: RedisServer;
  let replica: RedisServer;
  const users = randomRedisUsers();

  beforeAll(async () => {
    net = await TestNet.create(["racl-main", "racl-client", "racl-replica"]);
    main = net.host("racl-main");
    client = net.host("racl-client");
    replicaHost = net.host("racl-replica");
    ca = makeCa("redis-ca", net.mkdir("pki"));
    otherCa = makeCa("other-ca", net.mkdir("other-pki"));
    const cert = ca.issue("redis-main", [main.ip, "redis-main.synaxic.test"]);
    const rCert = ca.issue("redis-replica", [replicaHost.ip, "redis-replica.synaxic.test"]);
    master = RedisServer.create(net, main, "master", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
    replica = RedisServer.create(net, replicaHost, "replica", { caPem: ca.certPem, certPem: rCert.certPem, keyPem: rCert.keyPem });
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

  it("runs the app's operations as the app user: sessions, counters, caches with a TTL, topics, rate limits; nothing refused", async () => {
    const app = users.app;
    const t = master.target;
    const run = (argv: string[]): Promise<string> => redisOk(client, t, argv, app);
    await redisOk(client, t, ["ACL", "LOG", "RESET"], users.admin);
    // Connection set-up as Redisson does it (redis-cli sends the AUTH), and Spring Boot's health check.
    expect(await run(["PING"])).toBe("PONG");
    expect(await run(["CLIENT", "SETNAME", "synaxic-app"])).toBe("OK");
    expect(await run(["INFO", "server"])).toMatch(/redis_version:7\.0\./);

    // A session as Spring Session's RedisSessionRepository keeps it: one hash with an absolute expiry, renamed on login.
    // (@EnableRedisHttpSession keeps its default namespace, spring:session; Spring Boot's spring.session.* properties do not apply to it.)
    const s1 = "spring:session:sessions:s1";
    const s2 = "spring:session:sessions:s2";
    expect(await run(["HMSET", s1, "creationTime", "1", "lastAccessedTime", "2", "maxInactiveInterval", "86400", "sessionAttr:user", "alice"])).toBe("OK");
    expect(await run(["PEXPIREAT", s1, String(Date.now() + 86_400_000)])).toBe("1");
    expect(await run(["EXISTS", s1])).toBe("1");
    expect(await run(["RENAME", s1, s2])).toBe("OK");
    expect(await run(["HGETALL", s2])).toMatch(/^sessionAttr:user\nalice$/m);
    // The expiry moved with the key.
    expect(Number(await run(["PTTL", s2]))).toBeGreaterThan(86_000_000);
    expect(await run(["DEL", s2])).toBe("1");

    // The daily request counter: INCR, then an expiry set from a script (Redisson's expireAsync runs PEXPIRE in Lua).
    const day = "synaxic:daily_requests:2025-01-01";
    expect(await run(["INCR", day])).toBe("1");
    expect(await run(["EVAL", "return redis.call('PEXPIRE', KEYS[1], ARGV[1])", "1", day, "604800000"])).toBe("1");
    expect(await run(["GET", day])).toBe("1");

    // A rate-limit bucket kept by compare-and-swap, as Bucket4j's Redisson proxy manager does: created with
    // SET NX PX, then replaced only while unchanged by a script that Redisson runs as EVALSHA and loads
    // with SCRIPT LOAD when the server answers NOSCRIPT.
    const bucket = "rate:ip:10.0.0.9";
    const cas = "local cur = redis.call('GET', KEYS[1]) if cur ~= ARGV[1] then return 0 end redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[2]) return 1";
    expect(await run(["GET", bucket])).toBe("");
    expect(await run(["SET", bucket, "tokens=99", "PX", "60000", "NX"])).toBe("OK");
    const sha = createHash("sha1").update(cas).digest("hex");
    const unknown = await redisCli(client, t, ["EVALSHA", sha, "1", bucket, "tokens=99", "tokens=98", "60000"], { auth: app });
    expect(unknown.out).toMatch(/^NOSCRIPT /);
    expect(await run(["SCRIPT", "LOAD", cas])).toBe(sha);
    expect(await run(["SCRIPT", "EXISTS", sha])).toBe("1");
    expect(await run(["EVALSHA", sha, "1", bucket, "tokens=99", "tokens=98", "60000"])).toBe("1");
    // A second instance with the old state loses the race and must re-read.
    expect(await run(["EVALSHA", sha, "1", bucket, "tokens=99", "tokens=97", "60000"])).toBe("0");
    expect(await run(["GET", bucket])).toBe("tokens=98");
    expect(Number(await run(["PTTL", bucket]))).toBeGreaterThan(50_000);

    // A cache entry with a TTL as Redisson's RMapCache keeps it: the value in a hash, its expiry time in a
    // sorted set, an event on a channel; read by a read-only script (EVALSHA_RO), evicted by score.
    const cache = ["geoIp", "redisson__timeout__set:{geoIp}"];
    const put = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) redis.call('PUBLISH', KEYS[3], ARGV[1]) return redis.call('HLEN', KEYS[1])";
    const now = Date.now();
    expect(await run(["EVAL", put, "3", ...cache, "redisson_map_cache_created:{geoIp}", "10.0.0.9", "DE", String(now + 3_600_000)])).toBe("1");
    const get = "local at = redis.call('ZSCORE', KEYS[2], ARGV[1]) if not at or tonumber(at) <= tonumber(ARGV[2]) then return false end return redis.call('HGET', KEYS[1], ARGV[1])";
    const getSha = await run(["SCRIPT", "LOAD", get]);
    expect(await run(["EVALSHA_RO", getSha, "2", ...cache, "10.0.0.9", String(now)])).toBe("DE");
    const evict = "local gone = redis.call('ZRANGEBYSCORE', KEYS[2], 0, ARGV[1], 'LIMIT', 0, 100) for _, k in ipairs(gone) do redis.call('HDEL', KEYS[1], k) redis.call('ZREM', KEYS[2], k) end return #gone";
    expect(await run(["EVAL", evict, "2", ...cache, String(now + 7_200_000)])).toBe("1");
    expect(await run(["EXISTS", ...cache])).toBe("0");

    // Cache invalidation over a topic: one app instance subscribes, another publishes.
    const sub = redisCli(client, t, ["SUBSCRIBE", "cache-invalidation"], { auth: app, timeoutMs: 4000 });
    await waitFor("the subscriber", async () => (await run(["PUBSUB", "NUMSUB", "cache-invalidation"])).endsWith("\n1"), 3000, 50);
    expect(await run(["PUBLISH", "cache-invalidation", "geoIp:10.0.0.9"])).toBe("1");
    expect((await sub).out).toMatch(/^message\ncache-invalidation\ngeoIp:10\.0\.0\.9$/m);

    // Not one of these commands, nor any redis.call() inside the scripts, was refused.
    expect(await redisOk(client, t, ["ACL", "LOG"], users.admin)).toBe("");
  });

  it("allows the app user every command it sends and nothing beyond the groups of those (every command asked of the server)", async () => {
    const { allowed, denied } = await redisPermittedCommands(client, master.target, users.app.name, users.admin);
    const may = new Set(allowed.map((c) => c.name));
    const known = new Set([...may, ...denied.map((c) => c.name)]);
    expect(known.size).toBeGreaterThan(300);
    for (const c of APP_REDIS_COMMANDS) {
      const [cmd, sub] = [c.argv[0]!.toLowerCase(), c.argv[1]?.toLowerCase()];
      const name = sub !== undefined && known.has(`${cmd}|${sub}`) ? `${cmd}|${sub}` : cmd;
      expect(known.has(name), name).toBe(true);
      expect(may.has(name), `${c.argv.join(" ")} (${c.source}${c.inScript ? ", in a script" : ""})`).toBe(true);
    }
    // No data type the app does not use, nothing @dangerous except INFO.
    const unused = ["list", "set", "stream", "geo", "bitmap", "hyperloglog"];
    for (const c of allowed) {
      expect(c.categories.filter((k) => unused.includes(k)), c.name).toEqual([]);
      if (c.name !== "info") expect(c.categories, c.name).not.toContain("dangerous");
    }
    // Named denials: code that outlives the caller, other clients' scripts, the script debugger, other databases, copies.
    for (const name of [
      "function|load", "function|flush", "function|delete", "function|restore", "function|list", "fcall", "fcall_ro",
      "script|flush", "script|kill", "script|debug", "select", "move", "copy", "swapdb", "dump", "restore",
      "keys", "flushall", "flushdb", "config|get", "config|set", "monitor", "debug", "client|kill", "client|list", "client|pause", "acl|log", "slowlog|get",
      "lpush", "sadd", "xadd", "geoadd", "pfadd", "setbit",
    ]) {
      expect(known.has(name), name).toBe(true);
      expect(may.has(name), name).toBe(false);
    }
  });

  it("refuses the app user what it does not use, each refusal the ACL's own", async () => {
    await redisOk(client, master.target, ["SET", "k", "v"], users.app);
    const denied = [
      ["FLUSHALL"], ["FLUSHDB"], ["CONFIG", "GET", "*"], ["CONFIG", "SET", "appendonly", "no"], ["DEBUG", "SLEEP", "0"],
      ["KEYS", "*"], ["SHUTDOWN", "NOSAVE"], ["MONITOR"], ["REPLICAOF", "NO", "ONE"], ["ACL", "LIST"], ["BGSAVE"],
      ["CLIENT", "KILL", "TYPE", "normal"], ["MODULE", "LIST"], ["SAVE"],
      // Code that outlives the caller, other clients' scripts, the script debugger, other databases, values copied wholesale.
      ["FUNCTION", "LIST"], ["FUNCTION", "FLUSH"], ["FCALL", "f", "0"], ["SCRIPT", "FLUSH"], ["SCRIPT", "KILL"], ["SCRIPT", "DEBUG", "SYNC"],
      ["SELECT", "1"], ["MOVE", "k", "1"], ["COPY", "k", "k2", "DB", "1"], ["SWAPDB", "0", "1"], ["DUMP", "k"], ["RESTORE", "k3", "0", "x"],
      // Data types the app does not use.
      ["LPUSH", "l", "x"], ["SADD", "s", "x"], ["XADD", "x", "*", "f", "v"], ["GEOADD", "g", "0", "0", "m"], ["PFADD", "h", "x"], ["SETBIT", "b", "1", "1"],
    ];
    for (const argv of denied) {
      const r = await redisCli(client, master.target, argv, { auth: users.app });
      // DEBUG and MODULE are also switched off for everyone (enable-*-command no), which Redis checks first.
      expect(r.out, argv.join(" ")).toMatch(/^(NOPERM |ERR (DEBUG|MODULE) command not allowed)/);
      // The ACL denies each of them on its own, whatever the server-wide switches say.
      const dry = await redisOk(client, master.target, ["ACL", "DRYRUN", users.app.name, ...argv], users.admin);
      expect(dry, argv.join(" ")).toMatch(/^This user has no permissions to run the '[a-z|]+' command$/);
    }
    // A script cannot reach them either: Redis checks redis.call() against the caller's ACL.
    const inScript = await redisCli(client, master.target, ["EVAL", "return redis.call('FLUSHALL')", "0"], { auth: users.app });
    expect(inScript.out).toMatch(/^ERR The user executing the script can't run this command or subcommand/);
    // The server is still up and the data still there after all that.
    expect(await redisOk(client, master.target, ["GET", "k"], users.app)).toBe("v");
  });

  it("lets the replication user do nothing but replication", async () => {
    await redisOk(client, master.target, ["SET", "secret", "s3"], users.app);
    for (const argv of [["GET", "secret"], ["SET", "secret", "x"], ["SCAN", "0"], ["KEYS", "*"], ["INFO"], ["CONFIG", "GET", "*"], ["SUBSCRIBE", "events"]]) {
      const r = await redisCli(client, master.target, argv, { auth: users.replication });
      expect(r.out, argv.join(" ")).toMatch(/^NOPERM /);
    }
    expect(await redisOk(client, master.target, ["PING"], users.replication)).toBe("PONG");
  });

  it("syncs a replica over TLS as the replication user, which is refused nothing on the way", async () => {
    await redisOk(client, master.target, ["ACL", "LOG", "RESET"], users.admin);
    await replica.start(
      renderRedisConf({
        role: "replica",
        bind: [replicaHost.ip, "127.0.0.1"],
        ...replica.paths,
        announce: { ip: replicaHost.ip, port: 6380 },
        masterHost: main.ip,
        masterUser: users.replication.name,
        masterPassword: users.replication.password,
      }),
      renderRedisAcl(users),
    );
    await redisOk(client, master.target, ["HSET", "spring:session:sessions:r1", "sessionAttr:user", "bob"], users.app);
    const { master: m, replica: r } = await waitInSync(client, master.target, replica.target, users.admin);
    expect(r.master_link_status).toBe("up");
    expect(m.connected_slaves).toBe("1");
    expect(m.slave0).toContain(`ip=${replicaHost.ip},port=6380,state=online`);
    expect(await redisOk(client, replica.target, ["HGET", "spring:session:sessions:r1", "sessionAttr:user"], users.app)).toBe("bob");
    // The master's side: AUTH, PING, REPLCONF, PSYNC and the acks since, none of them refused.
    expect(await redisOk(client, master.target, ["ACL", "LOG"], users.admin)).toBe("");
  });

  it("lets redis_exporter serve every Redis metric the alert rules use, without SLOWLOG or LATENCY, and nothing more", async () => {
    for (const s of [master, replica]) await redisOk(client, s.target, ["ACL", "LOG", "RESET"], users.admin);
    const scrape = async (label: string, target: RedisTarget, port: number): Promise<{ metrics: string; log: string }> => {
      const listen = `${client.ip}:${port}`;
      const exporter = client.spawnDaemon(label, [
        "prometheus-redis-exporter",
        "--redis.addr", `rediss://${target.address}:${target.port}`,
        "--redis.user", users.exporter.name,
        "--tls-ca-cert-file", ca.certFile,
        "--config-command", "-",
        "--web.listen-address", listen,
      ], { env: { REDIS_PASSWORD: users.exporter.pass } });
      try {
        const get = async (): Promise<string | undefined> => {
          const text = await (await fetch(`http://${listen}/metrics`)).text();
          return /^redis_up /m.test(text) ? text : undefined;
        };
        await waitFor(`${label} metrics`, get, 15_000, 200);
        // A second scrape: a refused command would have been met (and logged) twice by now.
        const metrics = (await get())!;
        return { metrics, log: readFileSync(exporter.log, "utf8") };
      } finally {
        process.kill(-exporter.proc.pid!, "SIGKILL");
      }
    };
    const onMaster = await scrape("racl-exporter-master", master.target, 9121);
    const onReplica = await scrape("racl-exporter-replica", replica.target, 9122);

    for (const { metrics } of [onMaster, onReplica]) {
      expect(metrics).toMatch(/^redis_up 1$/m);
      expect(metrics).toMatch(/^redis_exporter_last_scrape_error\{err=""\} 0$/m);
      // SLOWLOG (other clients' commands and arguments) and LATENCY are refused and simply missing.
      expect(metrics).not.toMatch(/^redis_(slowlog_length|slowlog_last_id|last_slow_execution_duration_seconds|latency_spike_\w+)[ {]/m);
    }
    // Every redis_exporter metric the alert rules and dashboards may use, from one server or the other.
    const wanted = Object.entries(knownMetrics()).filter(([, m]) => m.source === "redis_exporter").map(([name]) => name);
    expect(wanted).toEqual(expect.arrayContaining(["redis_master_link_up", "redis_connected_slave_offset_bytes"]));
    for (const name of wanted) {
      const re = new RegExp(`^${name}(\\{[^}]*\\})? \\S+$`, "m");
      expect(re.test(onMaster.metrics) || re.test(onReplica.metrics), name).toBe(true);
    }
    expect(onMaster.metrics).toMatch(/^redis_connected_slaves 1$/m);
    expect(onMaster.metrics).toMatch(new RegExp(`^redis_connected_slave_offset_bytes\\{slave_ip="${replicaHost.ip.replace(/\./g, "\\.")}",slave_port="6380",slave_state="online"\\} \\d+$`, "m"));
    expect(onMaster.metrics).toMatch(/^redis_connected_slave_lag_seconds\{[^}]*\} \d+/m);
    expect(onReplica.metrics).toMatch(new RegExp(`^redis_master_link_up\\{master_host="${main.ip.replace(/\./g, "\\.")}",master_port="6380"\\} 1$`, "m"));
    expect(onReplica.metrics).toMatch(/^redis_master_repl_offset \d+$/m);

    for (const [s, { log }] of [[master, onMaster], [replica, onReplica]] as const) {
      // The refusals are exactly the three commands it can do without.
      const acl = await redisOk(client, s.target, ["ACL", "LOG"], users.admin);
      const objects = [...acl.matchAll(/^object\n(\S+)\n/gm)].map((m) => m[1]);
      expect(new Set(objects), s.name).toEqual(new Set(["slowlog|len", "slowlog|get", "latency|latest"]));
      expect([...acl.matchAll(/^username\n(\S+)\n/gm)].every((m) => m[1] === users.exporter.name)).toBe(true);
      // The exporter's log: one warning about LATENCY LATEST (logged once per process), no other error.
      const errors = log.split("\n").filter((l) => /level=(error|fatal)/.test(l));
      expect(errors, log).toHaveLength(1);
      expect(errors[0]).toMatch(/LOGGED ONCE ONLY: cmd LATENCY LATEST, err: NOPERM/);
    }
    for (const argv of [["GET", "secret"], ["CONFIG", "GET", "masterauth"], ["SCAN", "0"], ["FLUSHALL"], ["SLOWLOG", "GET", "10"], ["SLOWLOG", "LEN"], ["LATENCY", "LATEST"]]) {
      const r = await redisCli(client, master.target, argv, { auth: users.exporter });
      expect(r.out, argv.join(" ")).toMatch(/^NOPERM /);
    }
  });

  it("answers others BUSY once a runaway script passes busy-reply-threshold, and the admin user kills it", async () => {
    const limit = REDIS_CONF_DEFAULTS.busyReplyThresholdMs;
    const info = await redisOk(client, master.target, ["CONFIG", "GET", "busy-reply-threshold"], users.admin);
    expect(info.split("\n")[1]).toBe(String(limit));
    const started = Date.now();
    const loop = redisCli(client, master.target, ["EVAL", "local n = 0 while true do n = n + 1 end", "0"], { auth: users.app, timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 200));
    // Another app connection waits until the threshold, then gets BUSY instead of waiting for the script's end.
    const other = await redisCli(client, master.target, ["GET", "k"], { auth: users.app });
    const busyAt = Date.now() - started;
    expect(other.out).toMatch(/^BUSY Redis is busy running a script/);
    expect(busyAt).toBeGreaterThanOrEqual(limit);
    expect(busyAt).toBeLessThan(limit + 1500);
    // The app user may not kill scripts (they may be another client's)...
    expect((await redisCli(client, master.target, ["SCRIPT", "KILL"], { auth: users.app })).out).toMatch(/^NOPERM /);
    // ...the admin user may, and the server serves again.
    expect(await redisOk(client, master.target, ["SCRIPT", "KILL"], users.admin)).toBe("OK");
    expect((await loop).out).toMatch(/Script killed by user with SCRIPT KILL/);
    expect(await redisOk(client, master.target, ["GET", "k"], users.app)).toBe("v");
  });

  it("cannot kill a runaway script that has written: SHUTDOWN NOSAVE stops it, and its writes are not kept", async () => {
    const loop = redisCli(client, master.target, ["EVAL", "redis.call('SET', KEYS[1], 'partial') while true do end", "1", "runaway:wrote"], { auth: users.app, timeoutMs: 60_000 });
    await waitFor("BUSY", async () => /^BUSY /.test((await redisCli(client, master.target, ["GET", "k"], { auth: users.app })).out), 10_000, 50);
    expect((await redisCli(client, master.target, ["SCRIPT", "KILL"], { auth: users.admin })).out).toMatch(/^UNKILLABLE /);
    await redisCli(client, master.target, ["SHUTDOWN", "NOSAVE"], { auth: users.admin });
    await loop;
    await waitFor("the master to exit", async () => !master.running, 15_000, 50);
    await master.start();
    expect(await redisOk(client, master.target, ["EXISTS", "runaway:wrote"], users.app)).toBe("0");
    expect(await redisOk(client, master.target, ["GET", "k"], users.app)).toBe("v");
    await waitInSync(client, master.target, replica.target, users.admin);
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
