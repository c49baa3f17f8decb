/**
 * Redis replication status: the INFO parser, the INFO replication reader,
 * and the shell script that runs redis-cli as the admin user with the
 * password read from standard input (it never appears on a command line or
 * in the environment of the process that starts it).
 */
import { sh } from "../shell";
import { StatusParseError } from "./errors";
import type { RedisReplicaEntry, RedisReplicationFacts } from "./types";

/** Parses INFO output into field → value. */
export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    if (!raw || raw.startsWith("#")) continue;
    const i = raw.indexOf(":");
    if (i > 0) out[raw.slice(0, i)] = raw.slice(i + 1);
  }
  return out;
}

function int(info: Record<string, string>, field: string): number | null {
  const v = info[field];
  if (v === undefined || v === "") return null;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new StatusParseError("INFO replication", `${field} is ${JSON.stringify(v)}, not a number`);
  return n;
}

/** Parses one slaveN value: "ip=10.0.0.2,port=6380,state=online,offset=123,lag=0". */
export function parseReplicaEntry(value: string): RedisReplicaEntry {
  const f: Record<string, string> = {};
  for (const part of value.split(",")) {
    const i = part.indexOf("=");
    if (i > 0) f[part.slice(0, i)] = part.slice(i + 1);
  }
  const n = (k: string): number => {
    const v = Number(f[k]);
    if (f[k] === undefined || !Number.isFinite(v)) throw new StatusParseError("INFO replication", `replica entry ${JSON.stringify(value)} has no numeric ${k}`);
    return v;
  };
  if (!f.ip || !f.state) throw new StatusParseError("INFO replication", `replica entry ${JSON.stringify(value)} has no ip or state`);
  return { ip: f.ip, port: n("port"), state: f.state, offset: n("offset"), lag: n("lag") };
}

/** Reads the replication facts out of INFO replication output. */
export function parseRedisReplication(text: string): RedisReplicationFacts {
  const info = parseInfo(text);
  const role = info.role;
  if (role !== "master" && role !== "slave") {
    const first = text.trim().split("\n")[0] ?? "";
    throw new StatusParseError("INFO replication", role === undefined ? `no role field (${first.slice(0, 200) || "empty reply"})` : `role ${JSON.stringify(role)}`);
  }
  const slaves = Object.keys(info)
    .filter((k) => /^slave\d+$/.test(k))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)))
    .map((k) => parseReplicaEntry(info[k]!));
  const replica = role === "slave";
  return {
    role,
    connectedSlaves: int(info, "connected_slaves") ?? 0,
    slaves,
    masterReplOffset: int(info, "master_repl_offset") ?? 0,
    masterHost: replica ? (info.master_host ?? null) : null,
    masterPort: replica ? int(info, "master_port") : null,
    masterLinkStatus: replica ? (info.master_link_status ?? null) : null,
    slaveReplOffset: replica ? int(info, "slave_repl_offset") : null,
    masterLastIoSecondsAgo: replica ? int(info, "master_last_io_seconds_ago") : null,
    masterLinkDownSinceSeconds: replica ? int(info, "master_link_down_since_seconds") : null,
  };
}

export interface RedisCliScriptParams {
  /** CA that signed the server's certificate. */
  caFile: string;
  port: number;
  /** ACL user to authenticate as. */
  user: string;
  /** Address to connect to; default loopback (the server's own host). */
  host?: string;
  /** The redis-cli executable; default redis-cli on PATH. */
  redisCli?: string;
  /** The command and its arguments (no secrets). */
  args: readonly string[];
}

/**
 * A shell script that reads the password from the first line of standard
 * input into REDISCLI_AUTH and runs redis-cli over TLS. Pass it as
 * `sh -c <script>` with the password on stdin.
 */
export function redisCliScript(p: RedisCliScriptParams): string {
  if (p.args.length === 0) throw new Error("redisCliScript: no command");
  const cli = [
    p.redisCli ?? "redis-cli",
    "--tls",
    "--cacert",
    p.caFile,
    "-h",
    p.host ?? "127.0.0.1",
    "-p",
    String(p.port),
    "--user",
    p.user,
    "--no-auth-warning",
    ...p.args,
  ];
  return `IFS= read -r REDISCLI_AUTH || [ -n "$REDISCLI_AUTH" ] || { echo 'no password on standard input' >&2; exit 2; }; export REDISCLI_AUTH; exec ${sh(cli)} </dev/null`;
}
