import { describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import {
  APP_REDIS_COMMANDS,
  REDIS_ACL_RULES,
  REDIS_CONF_DEFAULTS,
  redisAclPasswordHash,
  redisConfQuote,
  renderRedisAcl,
  renderRedisConf,
  renderRedisPromoteCommands,
  renderRedisPromoteScript,
  renderRedisReplicaOfCommands,
  type RedisAclParams,
  type RedisMasterConfParams,
  type RedisReplicaConfParams,
} from "../../../templates/redis";

const master: RedisMasterConfParams = { role: "master", bind: ["0.0.0.0"], announce: { ip: "10.0.0.2", port: 6380 } };
const replica: RedisReplicaConfParams = {
  role: "replica",
  bind: ["0.0.0.0"],
  announce: { ip: "10.0.0.3", port: 6380 },
  masterHost: "10.0.0.2",
  masterUser: "replication",
  masterPassword: 'Xk3"rT9 \\ q$w#zP0-mN7vL2',
  replBacklogSize: "128mb",
};
const aclUsers: RedisAclParams = {
  app: { name: "synaxic-app", password: "app-password-0123456789" },
  replication: { name: "replication", password: "replication-password-0123" },
  exporter: { name: "exporter", password: "exporter-password-0123456" },
};

/** Directive lines (no comments or blanks) as [name, rest]. */
function directives(conf: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const l of conf.split("\n")) {
    if (!l || l.startsWith("#")) continue;
    const i = l.indexOf(" ");
    const name = l.slice(0, i);
    m.set(name, [...(m.get(name) ?? []), l.slice(i + 1)]);
  }
  return m;
}

describe("renderRedisConf", () => {
  it("renders the master config with container paths", () => {
    expect(renderRedisConf(master)).toMatchSnapshot();
  });

  it("renders the replica config", () => {
    expect(renderRedisConf(replica)).toMatchSnapshot();
  });

  it("renders explicit paths, timings and a memory limit", () => {
    expect(
      renderRedisConf({
        role: "master",
        bind: ["10.213.1.1", "127.0.0.1", "::1"],
        port: 16380,
        tls: { certFile: "/srv/redis tls/server.crt", keyFile: "/srv/redis tls/server.key", caFile: "/srv/redis tls/ca.crt" },
        aclFile: "/srv/redis/users.acl",
        dataDir: "/srv/redis/data",
        replDisklessSyncDelay: 0,
        replPingReplicaPeriod: 1,
        replTimeout: 3,
        maxmemory: "512MB",
      }),
    ).toMatchSnapshot();
  });

  it("turns the plain port off and serves TLS on 6380 only", () => {
    const d = directives(renderRedisConf(master));
    expect(d.get("port")).toEqual(["0"]);
    expect(d.get("tls-port")).toEqual(["6380"]);
    expect(d.get("protected-mode")).toEqual(["yes"]);
    expect(d.get("tls-auth-clients")).toEqual(["optional"]);
    expect(d.get("tls-replication")).toEqual(["yes"]);
    expect(d.get("tls-protocols")).toEqual(['"TLSv1.2 TLSv1.3"']);
    expect(d.get("tls-ca-cert-file")).toEqual(["/etc/synaxic/tls/ca.crt"]);
    expect(d.get("aclfile")).toEqual(["/etc/synaxic/users.acl"]);
    expect(d.get("appendonly")).toEqual(["yes"]);
    expect(d.get("appendfsync")).toEqual(["everysec"]);
    expect(d.get("dir")).toEqual(["/data"]);
    expect(d.get("enable-debug-command")).toEqual(["no"]);
    expect(d.has("rename-command")).toBe(false);
    expect(d.has("requirepass")).toBe(false);
  });

  it("gives only the replica replicaof, masteruser, masterauth and read-only", () => {
    const m = directives(renderRedisConf(master));
    for (const k of ["replicaof", "masteruser", "masterauth", "replica-read-only"]) expect(m.has(k)).toBe(false);
    const r = directives(renderRedisConf(replica));
    expect(r.get("replicaof")).toEqual(["10.0.0.2 6380"]);
    expect(r.get("masteruser")).toEqual(["replication"]);
    expect(r.get("masterauth")).toEqual(['"Xk3\\"rT9 \\\\ q$w#zP0-mN7vL2"']);
    expect(r.get("replica-read-only")).toEqual(["yes"]);
    expect(r.get("repl-backlog-size")).toEqual(["128mb"]);
    expect(r.get("replica-announce-ip")).toEqual(["10.0.0.3"]);
    expect(r.get("replica-announce-port")).toEqual(["6380"]);
  });

  it("starts a diskless full sync without waiting by default, and renders the delay it is given", () => {
    // Replicas join one at a time here: no second replica comes to share a transfer.
    expect(REDIS_CONF_DEFAULTS.replDisklessSyncDelay).toBe(0);
    for (const params of [master, replica] as const) {
      const d = directives(renderRedisConf(params));
      expect(d.get("repl-diskless-sync")).toEqual(["yes"]);
      expect(d.get("repl-diskless-sync-delay")).toEqual(["0"]);
      // Not rendered: at Redis's default (0, no maximum) it leaves the delay alone.
      expect(d.has("repl-diskless-sync-max-replicas")).toBe(false);
    }
    expect(directives(renderRedisConf({ ...master, replDisklessSyncDelay: 5 })).get("repl-diskless-sync-delay")).toEqual(["5"]);
    expect(directives(renderRedisConf({ ...replica, replDisklessSyncDelay: 2 })).get("repl-diskless-sync-delay")).toEqual(["2"]);
  });

  it("lets a script run 1000 ms before others get BUSY and it can be killed, unless told otherwise", () => {
    expect(REDIS_CONF_DEFAULTS.busyReplyThresholdMs).toBe(1000);
    for (const params of [master, replica] as const) {
      const d = directives(renderRedisConf(params));
      expect(d.get("busy-reply-threshold")).toEqual(["1000"]);
      // The old name is an alias in 7.0; only one of them is rendered.
      expect(d.has("lua-time-limit")).toBe(false);
    }
    expect(directives(renderRedisConf({ ...master, busyReplyThresholdMs: 250 })).get("busy-reply-threshold")).toEqual(["250"]);
  });

  it("leaves replica-announce-* out unless given", () => {
    const conf = renderRedisConf({ role: "master", bind: ["0.0.0.0"] });
    expect(conf).not.toContain("replica-announce");
    expect(renderRedisConf({ role: "master", bind: ["0.0.0.0"], announce: { ip: "10.0.0.2" } })).not.toContain("replica-announce-port");
  });

  it.each([
    ["no bind address", { bind: [] }, /bind must list at least one address/],
    ["a host name in bind", { bind: ["redis.example"] }, /bind\[0\] must be an IPv4 or IPv6 address, got "redis.example"/],
    ["an address twice in bind", { bind: ["10.0.0.1", "10.0.0.1"] }, /bind lists an address twice/],
    ["port 0", { port: 0 }, /port must be an integer from 1 to 65535, got 0/],
    ["port 70000", { port: 70000 }, /port must be an integer from 1 to 65535, got 70000/],
    ["a fractional port", { port: 6380.5 }, /port must be an integer/],
    ["a relative data dir", { dataDir: "data" }, /dataDir must be an absolute path/],
    ["a path with a newline", { aclFile: "/etc/users.acl\nport 6379" }, /aclFile must be an absolute path without control characters/],
    ["a bad backlog size", { replBacklogSize: "64 MB" }, /replBacklogSize must be a Redis size like "64mb", got "64 MB"/],
    ["a zero backlog", { replBacklogSize: "0" }, /replBacklogSize must be a Redis size/],
    ["a timeout not above the ping period", { replPingReplicaPeriod: 10, replTimeout: 10 }, /replTimeout \(10s\) must be greater than replPingReplicaPeriod \(10s\)/],
    ["a negative diskless delay", { replDisklessSyncDelay: -1 }, /replDisklessSyncDelay must be a whole number of seconds from 0/],
    ["a fractional diskless delay", { replDisklessSyncDelay: 0.5 }, /replDisklessSyncDelay must be a whole number of seconds from 0 to 86400, got 0.5/],
    ["a diskless delay over a day", { replDisklessSyncDelay: 86_401 }, /replDisklessSyncDelay must be a whole number of seconds from 0 to 86400, got 86401/],
    ["a diskless delay that is not a number", { replDisklessSyncDelay: "5" as unknown as number }, /replDisklessSyncDelay must be a whole number of seconds/],
    ["a bad announce address", { announce: { ip: "10.0.0.1; rm -rf /" } }, /announce.ip must be an IP address or a DNS name/],
    ["a bad announce port", { announce: { ip: "10.0.0.1", port: 65536 } }, /announce.port must be an integer from 1 to 65535/],
    ["a bad memory limit", { maxmemory: "lots" }, /maxmemory must be a Redis size/],
    ["a busy threshold of 0 (scripts never interruptible)", { busyReplyThresholdMs: 0 }, /busyReplyThresholdMs must be a whole number of milliseconds from 100 to 60000, got 0 \(0 would let a script run uninterruptible\)/],
    ["a negative busy threshold", { busyReplyThresholdMs: -1 }, /busyReplyThresholdMs must be a whole number of milliseconds from 100 to 60000, got -1/],
    ["a busy threshold over a minute", { busyReplyThresholdMs: 60_001 }, /busyReplyThresholdMs must be .* got 60001/],
    ["a fractional busy threshold", { busyReplyThresholdMs: 500.5 }, /busyReplyThresholdMs must be a whole number/],
  ])("rejects %s", (_what, patch, message) => {
    expect(() => renderRedisConf({ ...master, ...patch } as RedisMasterConfParams)).toThrow(message);
  });

  it.each([
    ["a master host with a space", { masterHost: "10.0.0.2 6379" }, /masterHost must be an IP address or a DNS name, got "10.0.0.2 6379"/],
    ["an empty master host", { masterHost: "" }, /masterHost must be an IP address or a DNS name/],
    ["a master port out of range", { masterPort: 0 }, /masterPort must be an integer from 1 to 65535/],
    ["a short master password", { masterPassword: "short" }, /masterPassword must be at least 16 characters long/],
    ["a master password with a line break", { masterPassword: "0123456789abcdef\nport 6379" }, /masterPassword must not contain NUL or line breaks/],
    ["the default user as master user", { masterUser: "default" }, /masterUser must not be "default"/],
    ["a master user with a space", { masterUser: "repl user" }, /masterUser must be 1-64 characters/],
  ])("rejects a replica with %s", (_what, patch, message) => {
    expect(() => renderRedisConf({ ...replica, ...patch } as RedisReplicaConfParams)).toThrow(message);
  });

  it("rejects an unknown role", () => {
    expect(() => renderRedisConf({ ...master, role: "sentinel" } as unknown as RedisMasterConfParams)).toThrow(/role must be "master" or "replica", got "sentinel"/);
  });
});

describe("redisConfQuote", () => {
  it.each([
    ["/data", "/data"],
    ["6380", "6380"],
    ["", '""'],
    ["TLSv1.2 TLSv1.3", '"TLSv1.2 TLSv1.3"'],
    ['a"b', '"a\\"b"'],
    ["a\\b", '"a\\\\b"'],
    ["it's", `"it's"`],
    ["#x", '"#x"'],
    ["tab\there", '"tab\\there"'],
    ["é", '"\\xc3\\xa9"'],
    ["\u0001", '"\\x01"'],
  ])("quotes %j as %s", (value, quoted) => {
    expect(redisConfQuote(value)).toBe(quoted);
  });
});

describe("APP_REDIS_COMMANDS", () => {
  it("names a source for each command and lists the app's scripting, session, counter, cache, topic and rate-limit commands", () => {
    for (const c of APP_REDIS_COMMANDS) {
      expect(c.argv.length, c.argv.join(" ")).toBeGreaterThan(0);
      expect(c.source, c.argv.join(" ")).toMatch(/\S/);
    }
    const names = new Set(APP_REDIS_COMMANDS.map((c) => c.argv[0]!.toLowerCase()));
    for (const name of ["evalsha", "script", "hmset", "hgetall", "rename", "incr", "publish", "subscribe", "zadd", "psetex", "info"]) expect(names).toContain(name);
    // Nothing the app's ACL denies.
    for (const name of ["function", "fcall", "select", "dump", "restore", "keys", "flushall", "config"]) expect(names).not.toContain(name);
    expect(APP_REDIS_COMMANDS.filter((c) => c.argv[0] === "SCRIPT").map((c) => c.argv[1])).toEqual(["LOAD"]);
  });
});

describe("renderRedisAcl", () => {
  it("renders the users without admin", () => {
    expect(renderRedisAcl(aclUsers)).toMatchSnapshot();
  });

  it("renders the users with admin", () => {
    expect(renderRedisAcl({ ...aclUsers, admin: { name: "ops-admin", password: "admin-password-0123456789" } })).toMatchSnapshot();
  });

  it("stores SHA-256 hashes, never the passwords", () => {
    const acl = renderRedisAcl(aclUsers);
    for (const u of Object.values(aclUsers)) {
      expect(acl).not.toContain(u.password);
      const hex = createHash("sha256").update(u.password).digest("hex");
      expect(acl).toMatch(new RegExp(`^user ${u.name} reset on #${hex} `, "m"));
      expect(redisAclPasswordHash(u.password)).toBe(`#${hex}`);
    }
    expect(acl).not.toMatch(/>|nopass/);
  });

  it("switches the default user off and limits each user", () => {
    const lines = renderRedisAcl(aclUsers).trim().split("\n");
    expect(lines[0]).toBe("user default off resetpass ~* &* +@all");
    const rules = (name: string): string => lines.find((l) => l.startsWith(`user ${name} `))!.split(" ").slice(5).join(" ");
    expect(rules("replication")).toBe("-@all +psync +replconf +ping");
    expect(rules("synaxic-app")).toBe(REDIS_ACL_RULES.app.join(" "));
    const app = rules("synaxic-app").split(" ");
    // Command groups of the data types the app uses, never all of them nor the generic @read/@write.
    expect(app).not.toContain("+@all");
    for (const group of ["+@read", "+@write", "+@list", "+@set", "+@stream", "+@geo", "+@bitmap", "+@hyperloglog"]) expect(app).not.toContain(group);
    for (const group of ["+@string", "+@hash", "+@sortedset", "+@keyspace", "+@pubsub", "+@scripting"]) expect(app).toContain(group);
    // What is taken away comes after every group that is given.
    const lastGrant = Math.max(...app.map((r, i) => (r.startsWith("+@") ? i : -1)));
    for (const deny of ["-@dangerous", "-function", "-fcall", "-script|flush", "-script|kill", "-script|debug", "-select", "-dump", "-restore"]) {
      expect(app.indexOf(deny), deny).toBeGreaterThan(lastGrant);
    }
    // The exporter: INFO for the metrics, nothing that shows other clients' commands or the config.
    expect(rules("exporter")).toBe("-@all +info +ping +client|setname");
    expect(REDIS_ACL_RULES.admin).toContain("+@all");
  });

  it.each([
    ["two users with one name", { exporter: { name: "replication", password: "exporter-password-0123456" } }, /the exporter and replication users are both named "replication"/],
    ["a user named default", { app: { name: "default", password: "app-password-0123456789" } }, /app.name must not be "default"/],
    ["a user name with a space", { app: { name: "my app", password: "app-password-0123456789" } }, /app.name must be 1-64 characters/],
    ["a short password", { exporter: { name: "exporter", password: "short" } }, /exporter.password must be at least 16 characters long/],
    ["a missing replication user", { replication: undefined }, /the replication user is required/],
  ])("rejects %s", (_what, patch, message) => {
    expect(() => renderRedisAcl({ ...aclUsers, ...patch } as RedisAclParams)).toThrow(message);
  });
});

describe("promotion", () => {
  it("promotes with REPLICAOF NO ONE and repoints with REPLICAOF host port", () => {
    expect(renderRedisPromoteCommands()).toEqual([["REPLICAOF", "NO", "ONE"]]);
    expect(renderRedisReplicaOfCommands("10.0.0.3")).toEqual([["REPLICAOF", "10.0.0.3", "6380"]]);
    expect(() => renderRedisReplicaOfCommands("10.0.0.3 1")).toThrow(/masterHost must be an IP address or a DNS name/);
  });

  it("renders the promotion script for the container", () => {
    const script = renderRedisPromoteScript({ user: "ops-admin" });
    expect(script).toMatchSnapshot();
    // The password comes from the environment, never from the command line.
    expect(script).not.toMatch(/ -a | --pass /);
    expect(script).toContain('"${REDISCLI_AUTH:?');
  });

  it("rejects a bad user or address", () => {
    expect(() => renderRedisPromoteScript({ user: "ops admin" })).toThrow(/user must be 1-64 characters/);
    expect(() => renderRedisPromoteScript({ user: "ops-admin", host: "$(reboot)" })).toThrow(/host must be an IP address or a DNS name/);
    expect(() => renderRedisPromoteScript({ user: "ops-admin", caFile: "ca.crt" })).toThrow(/caFile must be an absolute path/);
  });
});
