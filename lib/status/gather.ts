/**
 * Asks every host for its facts through a HostRunner: the one PostgreSQL
 * status query and INFO replication, all hosts at once. A failure on one
 * server is recorded as that server's fact, never thrown.
 */
import { parseBackupInfo } from "./backup";
import { ConnectionError } from "./errors";
import { PG_STATUS_SQL, parsePgStatus } from "./postgres";
import { parseRedisReplication } from "./redis";
import type { FleetFacts, Gathered, HostFacts } from "./types";

/** How the status command reaches the servers of one host. */
export interface HostRunner {
  /** Runs SQL (sent on standard input) on the host's PostgreSQL as its superuser; resolves with psql's stdout (-At). */
  psql(host: string, sql: string): Promise<string>;
  /** Runs a redis-cli command on the host's Redis as the admin user; resolves with its stdout. */
  redis(host: string, args: readonly string[]): Promise<string>;
  /** Runs `pgbackrest info --output=json` for the fleet's stanza on the host; resolves with its stdout. */
  backupInfo(host: string): Promise<string>;
}

export interface GatherOptions {
  /** Ask each host's pgBackRest about the backups (the fleet has them). */
  backups?: boolean;
  /** Unix seconds, for ages; default the local clock. */
  now?: () => number;
}

async function attempt<T>(fn: () => Promise<T>): Promise<Gathered<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e), connection: e instanceof ConnectionError };
  }
}

export async function gatherHost(runner: HostRunner, host: string, options: GatherOptions = {}): Promise<HostFacts> {
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const [postgres, redis, backup] = await Promise.all([
    attempt(async () => parsePgStatus(await runner.psql(host, PG_STATUS_SQL))),
    attempt(async () => parseRedisReplication(await runner.redis(host, ["INFO", "replication"]))),
    options.backups ? attempt(async () => parseBackupInfo(await runner.backupInfo(host), now())) : Promise.resolve(null),
  ]);
  return { name: host, postgres, redis, backup };
}

/** Facts of the main host and of each replica host named. */
export async function gather(runner: HostRunner, hosts: { main: string; replicas: readonly string[] }, options: GatherOptions = {}): Promise<FleetFacts> {
  const [main, ...replicas] = await Promise.all([hosts.main, ...hosts.replicas].map((h) => gatherHost(runner, h, options)));
  return { main: main!, replicas };
}
