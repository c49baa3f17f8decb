/**
 * Redis servers on rig hosts, started from rendered redis.conf/users.acl
 * exactly as the program writes them, and a redis-cli wrapper that speaks TLS
 * and passes passwords through REDISCLI_AUTH (never argv).
 *
 * Files get the modes and owner the containers use: redis.conf, users.acl and
 * the key 0600 owned by the redis user; certificates 0644; the data directory
 * 0700 owned by redis. The server itself runs as the redis user.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { waitFor, type ExecResult, type Host, type TestNet } from "./net";
import { parseInfo } from "../../lib/status/redis";

export interface RedisCredentials {
  user: string;
  pass: string;
}

export interface RedisTlsMaterial {
  /** PEM of the CA the server trusts (verifies its master and offered client certificates). */
  caPem: string;
  certPem: string;
  keyPem: string;
}

function redisIds(): { uid: number; gid: number } {
  const uid = Number(execFileSync("id", ["-u", "redis"], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", "redis"], { encoding: "utf8" }).trim());
  return { uid, gid };
}

/** One Redis instance on a host: its files, its process, its log. */
export class RedisServer {
  readonly root: string;
  readonly confFile: string;
  readonly aclFile: string;
  readonly dataDir: string;
  readonly tlsDir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  private proc: ChildProcess | undefined;
  private logFile = "";
  private logOffset = 0;

  private constructor(
    readonly net: TestNet,
    readonly host: Host,
    readonly name: string,
    readonly port: number,
  ) {
    this.root = net.mkdir(`redis-${name}`);
    this.tlsDir = join(this.root, "tls");
    this.dataDir = join(this.root, "data");
    this.confFile = join(this.root, "redis.conf");
    this.aclFile = join(this.root, "users.acl");
    this.certFile = join(this.tlsDir, "redis.crt");
    this.keyFile = join(this.tlsDir, "redis.key");
    this.caFile = join(this.tlsDir, "ca.crt");
  }

  /** Lays out the instance's directories and TLS files; start() writes the config and runs it. */
  static create(net: TestNet, host: Host, name: string, tls: RedisTlsMaterial, port = 6380): RedisServer {
    // The rig's work directory is root-only; the redis user must traverse it.
    if ((statSync(net.dir).mode & 0o011) !== 0o011) chmodSync(net.dir, 0o711);
    const s = new RedisServer(net, host, name, port);
    const { uid, gid } = redisIds();
    chmodSync(s.root, 0o711);
    mkdirSync(s.tlsDir, { mode: 0o755 });
    mkdirSync(s.dataDir, { mode: 0o700 });
    chownSync(s.dataDir, uid, gid);
    writeFileSync(s.caFile, tls.caPem, { mode: 0o644 });
    writeFileSync(s.certFile, tls.certPem, { mode: 0o644 });
    writeFileSync(s.keyFile, tls.keyPem, { mode: 0o600 });
    chownSync(s.keyFile, uid, gid);
    return s;
  }

  /** The paths to render into redis.conf. */
  get paths(): { tls: { certFile: string; keyFile: string; caFile: string }; aclFile: string; dataDir: string } {
    return { tls: { certFile: this.certFile, keyFile: this.keyFile, caFile: this.caFile }, aclFile: this.aclFile, dataDir: this.dataDir };
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Writes the rendered files (0600, owned by redis) and starts the server as the redis user; resolves once it accepts connections. */
  async start(conf?: string, acl?: string): Promise<void> {
    if (this.running) throw new Error(`redis ${this.name} is already running`);
    const { uid, gid } = redisIds();
    if (conf !== undefined) {
      writeFileSync(this.confFile, conf, { mode: 0o600 });
      chmodSync(this.confFile, 0o600);
      chownSync(this.confFile, uid, gid);
    }
    if (acl !== undefined) {
      writeFileSync(this.aclFile, acl, { mode: 0o600 });
      chmodSync(this.aclFile, 0o600);
      chownSync(this.aclFile, uid, gid);
    }
    const { proc, log } = this.host.spawnDaemon(`redis-${this.name}`, [
      "setpriv", "--reuid", "redis", "--regid", "redis", "--init-groups", "--", "redis-server", this.confFile,
    ]);
    this.logFile = log;
    this.logOffset = this.readWholeLog().length;
    this.proc = proc;
    await waitFor(`redis ${this.name} to accept connections`, async () => {
      if (!this.running) throw new Error(`redis ${this.name} exited (${proc.exitCode ?? proc.signalCode}):\n${this.log()}`);
      return /Ready to accept connections/.test(this.log());
    }, 20_000, 50);
  }

  /** Stops the server (SIGTERM: clean shutdown; SIGKILL: crash) and waits for it to exit. */
  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const proc = this.proc;
    if (!proc || !this.running) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    try {
      process.kill(-proc.pid!, signal);
    } catch {
      /* already gone */
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-proc.pid!, "SIGKILL");
      } catch {
        /* gone */
      }
    }, 15_000);
    await exited;
    clearTimeout(timer);
  }

  async restart(signal: "SIGTERM" | "SIGKILL" = "SIGTERM", conf?: string): Promise<void> {
    await this.stop(signal);
    await this.start(conf);
  }

  private readWholeLog(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }

  /** The server's log since its last start. */
  log(): string {
    return this.readWholeLog().slice(this.logOffset);
  }

  /** Where a client on another host reaches this server. */
  get target(): RedisTarget {
    return { address: this.host.ip, port: this.port, caFile: this.caFile };
  }

  /** Where a client on the same host reaches this server (loopback). */
  get localTarget(): RedisTarget {
    return { address: "127.0.0.1", port: this.port, caFile: this.caFile };
  }
}

export interface RedisTarget {
  address: string;
  port: number;
  /** CA the client trusts. */
  caFile: string;
}

export interface RedisCliOptions {
  auth?: RedisCredentials;
  /** false: plain TCP, no TLS. */
  tls?: boolean;
  /** Trust this CA file instead of the target's. */
  caFile?: string;
  /** Offer this client certificate (redis-cli --cert/--key). */
  clientCert?: { certFile: string; keyFile: string };
  timeoutMs?: number;
}

export interface RedisCliResult extends ExecResult {
  /** stdout and stderr together, trimmed. */
  out: string;
}

/**
 * Runs a command in a host's namespace with stdin closed from the start and
 * resolves with its code (never rejects on a non-zero exit). Unlike
 * Host.exec it writes nothing to the child's stdin, so a command that exits
 * at once (connection refused) cannot race a write into a closed pipe.
 */
export function execIn(host: Host, argv: readonly string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", host.ns, ...argv], { env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code: code ?? (signal ? 128 : 1) });
    });
  });
}

/**
 * Runs redis-cli on `from` against `target`. The password goes in the
 * REDISCLI_AUTH environment variable. Never rejects: inspect code and out
 * (redis-cli exits 0 on error replies, which it prints).
 */
export async function redisCli(from: Host, target: RedisTarget, args: readonly string[], opts: RedisCliOptions = {}): Promise<RedisCliResult> {
  const argv = ["redis-cli", "-h", target.address, "-p", String(target.port), "--no-auth-warning"];
  if (opts.tls !== false) argv.push("--tls", "--cacert", opts.caFile ?? target.caFile);
  if (opts.clientCert) argv.push("--cert", opts.clientCert.certFile, "--key", opts.clientCert.keyFile);
  const env: Record<string, string> = {};
  if (opts.auth) {
    argv.push("--user", opts.auth.user);
    env.REDISCLI_AUTH = opts.auth.pass;
  }
  argv.push(...args);
  const r = await execIn(from, argv, { env, timeoutMs: opts.timeoutMs ?? 15_000 });
  return { ...r, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Like redisCli, but fails unless the command ran and replied without an error. */
export async function redisOk(from: Host, target: RedisTarget, args: readonly string[], auth: RedisCredentials): Promise<string> {
  const r = await redisCli(from, target, args, { auth });
  if (r.code !== 0 || /^(ERR|NOAUTH|NOPERM|WRONGPASS|READONLY|WRONGTYPE|AUTH failed|Could not connect)/m.test(r.out)) {
    throw new Error(`redis-cli ${args.join(" ")} against ${target.address}:${target.port} failed (${r.code}): ${r.out}`);
  }
  return r.stdout.replace(/\n$/, "");
}

/** Parses INFO output into field → value (shared with the status command). */
export { parseInfo };

export async function redisInfo(from: Host, target: RedisTarget, section: string, auth: RedisCredentials): Promise<Record<string, string>> {
  return parseInfo(await redisOk(from, target, ["INFO", section], auth));
}

/**
 * A digest of the whole dataset computed by the server itself (EVAL_RO, so
 * it runs on read-only replicas too): every key, its type, its value read in
 * a canonical order (sets and hashes sorted) and whether it has a TTL.
 * DEBUG DIGEST is not available: the rendered config disables DEBUG.
 */
const DIGEST_SCRIPT = `
local keys = {}
local cursor = "0"
repeat
  local r = redis.call("SCAN", cursor, "COUNT", 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do keys[#keys + 1] = k end
until cursor == "0"
table.sort(keys)
local parts = {}
local function add(s) parts[#parts + 1] = string.len(s) .. ":" .. s end
for _, k in ipairs(keys) do
  local t = redis.call("TYPE", k)["ok"]
  add(k); add(t)
  local v = {}
  if t == "string" then v = { redis.call("GET", k) }
  elseif t == "list" then v = redis.call("LRANGE", k, 0, -1)
  elseif t == "set" then v = redis.call("SMEMBERS", k); table.sort(v)
  elseif t == "zset" then v = redis.call("ZRANGE", k, 0, -1, "WITHSCORES")
  elseif t == "hash" then
    local flat = redis.call("HGETALL", k)
    for i = 1, #flat, 2 do v[#v + 1] = flat[i] .. "\\0" .. flat[i + 1] end
    table.sort(v)
  elseif t == "stream" then
    for _, e in ipairs(redis.call("XRANGE", k, "-", "+")) do
      v[#v + 1] = e[1]
      for _, f in ipairs(e[2]) do v[#v + 1] = f end
    end
  end
  for _, x in ipairs(v) do add(x) end
  add(redis.call("PTTL", k) >= 0 and "ttl" or "persist")
end
return { #keys, redis.sha1hex(table.concat(parts, "|")) }
`;

export interface DataDigest {
  keys: number;
  sha1: string;
}

export async function dataDigest(from: Host, target: RedisTarget, auth: RedisCredentials): Promise<DataDigest> {
  const out = await redisOk(from, target, ["EVAL_RO", DIGEST_SCRIPT, "0"], auth);
  const [keys, sha1] = out.split("\n");
  if (!keys || !sha1 || !/^[0-9a-f]{40}$/.test(sha1)) throw new Error(`unexpected digest reply: ${out}`);
  return { keys: Number(keys), sha1 };
}

/** Waits until the replica's link to its master is up and both report the same replication offset. */
export async function waitInSync(
  from: Host,
  master: RedisTarget,
  replica: RedisTarget,
  auth: RedisCredentials,
  timeoutMs = 30_000,
): Promise<{ master: Record<string, string>; replica: Record<string, string> }> {
  return waitFor("replica in sync with master", async () => {
    const m = await redisInfo(from, master, "replication", auth);
    const r = await redisInfo(from, replica, "replication", auth);
    if (r.master_link_status !== "up") return false;
    if (m.master_repl_offset !== r.master_repl_offset) return false;
    return { master: m, replica: r };
  }, timeoutMs, 100);
}

/** Fresh passwords for the four ACL users; the replication one holds characters redis.conf must quote. */
export function randomRedisUsers(): {
  app: RedisCredentials & { name: string; password: string };
  replication: RedisCredentials & { name: string; password: string };
  exporter: RedisCredentials & { name: string; password: string };
  admin: RedisCredentials & { name: string; password: string };
} {
  const pw = (extra = ""): string => `${randomBytes(18).toString("base64url")}${extra}`;
  const user = (name: string, password: string) => ({ name, password, user: name, pass: password });
  return {
    app: user("synaxic-app", pw()),
    replication: user("replication", pw(` "q' \\ $HOME #x`)),
    exporter: user("exporter", pw()),
    admin: user("ops-admin", pw()),
  };
}

/**
 * The server's own timestamps (ms since the epoch, read from the machine's
 * clock like Date.now()) of the log lines that contain `text`, in order.
 * Redis 7.0 writes "pid:role DD Mon YYYY HH:MM:SS.mmm <level> message".
 */
export function redisLogTimes(log: string, text: string): number[] {
  const times: number[] = [];
  for (const line of log.split("\n")) {
    if (!line.includes(text)) continue;
    const m = /^\d+:[A-Z] (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2})\.(\d{3}) /.exec(line);
    if (!m) continue;
    const month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].indexOf(m[2]!);
    times.push(new Date(Number(m[3]), month, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]), Number(m[7])).getTime());
  }
  return times;
}

export interface FillResult {
  keys: number;
  /** Bytes of values written (keys not counted). */
  valueBytes: number;
}

/** One command in the Redis protocol (RESP), as redis-cli --pipe reads it. */
function resp(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = typeof a === "string" ? Buffer.from(a) : a;
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

/**
 * Fills a server with about `bytes` of string values, `valueSize` bytes each,
 * through `redis-cli --pipe` (so hundreds of megabytes take seconds, not a
 * round trip per key). Each value is cut from a random blob at its own
 * offset: random within itself, so RDB compression (LZF, per value) cannot
 * shrink a transfer. Plain SETs, never a script or MULTI: Redis 7.0 drops a
 * MULTI/EXEC block (the form a script's writes take in the AOF) when it
 * reloads the AOF with the default user off (redis/redis#14541), and tests
 * restart servers.
 */
export async function fillWithStrings(
  from: Host,
  target: RedisTarget,
  auth: RedisCredentials,
  o: { bytes: number; valueSize?: number; prefix?: string },
): Promise<FillResult> {
  const size = o.valueSize ?? 4000;
  const keys = Math.ceil(o.bytes / size);
  const blob = Buffer.from(randomBytes(48 * 1024).toString("base64"));
  const span = blob.length - size;
  const perBatch = Math.max(1, Math.floor((32 * 1024 * 1024) / size));
  for (let first = 0; first < keys; first += perBatch) {
    const cmds: Buffer[] = [];
    for (let i = first; i < Math.min(keys, first + perBatch); i++) {
      const off = (i * 7919) % span;
      cmds.push(resp(["SET", `${o.prefix ?? "fill"}:${i}`, blob.subarray(off, off + size)]));
    }
    const argv = ["redis-cli", "-h", target.address, "-p", String(target.port), "--no-auth-warning", "--tls", "--cacert", target.caFile, "--user", auth.user, "--pipe"];
    // All ASCII (base64 values, plain key names), so the text form is byte for byte the protocol.
    const r = await from.exec(argv, { input: Buffer.concat(cmds).toString(), env: { REDISCLI_AUTH: auth.pass }, timeoutMs: 120_000, allowFail: true });
    if (r.code !== 0 || !/errors: 0, replies: \d+/.test(r.stdout)) throw new Error(`redis-cli --pipe into ${target.address}:${target.port} failed (${r.code}): ${r.stdout}${r.stderr}`);
  }
  return { keys, valueBytes: keys * size };
}

/** Waits until the server has no child process (no AOF rewrite, no RDB save or transfer) running or scheduled. */
export async function waitNoChild(from: Host, target: RedisTarget, auth: RedisCredentials, timeoutMs = 120_000): Promise<void> {
  await waitFor("no AOF rewrite or RDB child on the server", async () => {
    const p = await redisInfo(from, target, "persistence", auth);
    return p.aof_rewrite_in_progress === "0" && p.aof_rewrite_scheduled === "0" && p.rdb_bgsave_in_progress === "0";
  }, timeoutMs, 100);
}

/** A command or subcommand ("script|load") of the server's command table with its ACL categories (without the "@"). */
export interface RedisCommandEntry {
  name: string;
  categories: string[];
}

/**
 * What `user` may run on the server, asked of the server itself: every
 * command and subcommand of its table (COMMAND INFO) put through ACL DRYRUN
 * with placeholder arguments of the right count, in one redis-cli session
 * (commands on standard input) as `admin`.
 */
export async function redisPermittedCommands(
  from: Host,
  target: RedisTarget,
  user: string,
  admin: RedisCredentials,
): Promise<{ allowed: RedisCommandEntry[]; denied: RedisCommandEntry[] }> {
  type Info = [string, number, unknown, unknown, unknown, unknown, string[], unknown, unknown, Info[]];
  const table = JSON.parse(await redisOk(from, target, ["--json", "COMMAND", "INFO"], admin)) as Info[];
  const entries: (RedisCommandEntry & { argv: string[] })[] = [];
  const entry = (info: Info, words: string[]): void => {
    const args = Math.max(0, Math.abs(info[1]) - words.length);
    entries.push({ name: info[0], categories: info[6].map((c) => c.replace(/^@/, "")), argv: [...words, ...Array<string>(args).fill("x")] });
  };
  for (const cmd of table) {
    if (cmd[9].length === 0) entry(cmd, [cmd[0]]);
    for (const sub of cmd[9]) entry(sub, sub[0].split("|"));
  }
  const input = entries.map((e) => ["ACL", "DRYRUN", user, ...e.argv].join(" ")).join("\n") + "\n";
  const argv = ["redis-cli", "-h", target.address, "-p", String(target.port), "--no-auth-warning", "--tls", "--cacert", target.caFile, "--user", admin.user];
  const r = await from.exec(argv, { input, env: { REDISCLI_AUTH: admin.pass }, timeoutMs: 60_000 });
  const replies = r.stdout.trimEnd().split("\n");
  if (replies.length !== entries.length) throw new Error(`ACL DRYRUN: ${entries.length} commands sent, ${replies.length} replies:\n${r.stdout}`);
  const allowed: RedisCommandEntry[] = [];
  const denied: RedisCommandEntry[] = [];
  entries.forEach(({ name, categories }, i) => {
    const reply = replies[i]!;
    if (reply === "OK") allowed.push({ name, categories });
    else if (/^This user has no permissions to run the '[a-z_|-]+' command$/.test(reply)) denied.push({ name, categories });
    else throw new Error(`ACL DRYRUN ${user} ${name}: unexpected reply ${reply}`);
  });
  return { allowed, denied };
}
