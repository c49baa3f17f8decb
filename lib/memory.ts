/**
 * One memory budget per host: what each container may use, and what the
 * services inside are sized to, all derived here from the host's memory.
 *
 * Without it every service sizes itself as if it had the host alone
 * (PGTune from the host's RAM, Redis with no maxmemory, the JVM at a
 * quarter of the host), and together they exceed RAM on small servers,
 * where the kernel's OOM killer then picks one. With it:
 *
 * - the OS (kernel, sshd, dockerd, page cache beyond the containers'),
 *   the balancer, monitoring and the exporters get fixed reservations;
 * - the rest is shared by PostgreSQL, the app and Redis in fixed
 *   proportions, each as its container's memory limit;
 * - PGTune is given PostgreSQL's share, not the host's RAM;
 * - Redis' maxmemory leaves room in its limit for the copy-on-write of a
 *   fork (BGSAVE, AOF rewrite, a replica's full sync);
 * - the JVM's heap is a percentage of the app's limit (-XX:MaxRAMPercentage,
 *   which HotSpot applies to the container's limit);
 * - a host too small for the minimum of every service is refused.
 */
import { ConfigError } from "./config";

export type ServiceName = "postgres" | "redis" | "app" | "nginx" | "prometheus" | "alertmanager" | "grafana" | "nodeExporter" | "postgresExporter" | "redisExporter" | "backup" | "pgbackrestServer";

/** The main host, a replica, or the replica that also runs the second Prometheus and Alertmanager (monitoringReplica). */
export type HostKind = "main" | "replica" | "monitoringReplica";

const KIND_NAME: Record<HostKind, string> = { main: "main host", replica: "replica host", monitoringReplica: "monitoring replica host (monitoringReplica)" };

export interface MemoryBudget {
  hostMiB: number;
  /** Left to the OS: kernel, sshd, dockerd, and page cache outside the containers. */
  osReserveMiB: number;
  /** Each service's container memory limit, in MiB (absent: the service does not run on this kind of host). */
  limitsMiB: Partial<Record<ServiceName, number>>;
  /** PGTune's input: the memory PostgreSQL may use (its container's limit). */
  postgresMiB: number;
  /** Redis maxmemory, in MiB. */
  redisMaxMemoryMiB: number;
  /** The JVM's maximum heap as a percentage of the app container's limit. */
  appMaxRamPercentage: number;
}

/** Fixed reservations, in MiB. */
const FIXED: Record<HostKind, Partial<Record<ServiceName, number>>> = {
  // The balancer runs on main (and on a promoted replica); monitoring on main only.
  // Alertmanager's share comes out of Prometheus' former 512 MiB: it keeps a
  // few hundred alerts and its notification log in memory.
  // The backup scheduler runs pgBackRest's backup, expire and verify (process-max 2, zstd level 3: tens of MiB each) on every host,
  // and, one after the other with them, the weekly restore drill: a restore, then a throwaway PostgreSQL with 16 MB of
  // shared buffers and 10 connections (templates/backup-scheduler.ts, drillServerArgv). The drill's integration test runs
  // it in a memory cgroup of this limit: 56 MiB at most with the page cache, about 20 MiB resident, no OOM kill;
  // production's shared buffers filled add 16 MiB. So the 128 MiB stand, and so do the minimums.
  // pgBackRest's TLS server serves a standby's backup (one process per connection, reading files).
  main: { nginx: 128, prometheus: 448, alertmanager: 64, grafana: 256, nodeExporter: 64, postgresExporter: 64, redisExporter: 64, backup: 128, pgbackrestServer: 64 },
  replica: { nginx: 128, nodeExporter: 64, postgresExporter: 64, redisExporter: 64, backup: 128, pgbackrestServer: 64 },
  // The second Prometheus scrapes the same targets with the same rules and
  // retention as main's, so it gets the same share; its Alertmanager too.
  // No Grafana: it runs on main only.
  monitoringReplica: { nginx: 128, prometheus: 448, alertmanager: 64, nodeExporter: 64, postgresExporter: 64, redisExporter: 64, backup: 128, pgbackrestServer: 64 },
};

/** How the rest is shared, and each service's least useful size. */
const SHARES = { postgres: 0.45, app: 0.35, redis: 0.2 } as const;
const MINIMUM = { postgres: 256, app: 448, redis: 96 } as const;

/**
 * The Redis snapshot job's container limit (components/RedisSnapshots.ts), in
 * MiB. Not a share of the budget: a share of its own would resize PostgreSQL,
 * the app and Redis on every host (and restart them) for a job that idles as
 * a shell waiting a minute at a time and, once a day, streams a snapshot
 * through redis-cli, openssl and curl, each a few MiB resident; the file's
 * page cache is charged to its cgroup and reclaimed within the limit. It
 * comes out of the OS reserve (osReserveMiB, at least 256 MiB), and runs on
 * one host, the Redis master's.
 */
export const REDIS_SNAPSHOT_JOB_MIB = 64;

/** Redis maxmemory as a share of its limit: a fork's copy-on-write needs room. */
export const REDIS_MAXMEMORY_SHARE = 0.6;
/** Heap share of the app's limit; the rest is metaspace, threads, code cache, direct buffers. */
export const APP_MAX_RAM_PERCENTAGE = 70;

/** Kernel, sshd, dockerd and containerd, and some page cache: 10% of the host, at least 256 MiB. */
export function osReserveMiB(hostMiB: number): number {
  return Math.max(256, Math.round(hostMiB * 0.1));
}

export class MemoryBudgetError extends Error {
  constructor(
    readonly needMiB: number,
    message: string,
  ) {
    super(message);
    this.name = "MemoryBudgetError";
  }
}

function shares(kind: HostKind, hostMiB: number) {
  const fixed = FIXED[kind];
  const flexible = hostMiB - osReserveMiB(hostMiB) - Object.values(fixed).reduce((a, b) => a + b, 0);
  const share = (k: keyof typeof SHARES) => Math.floor(flexible * SHARES[k]);
  return { fixed, postgres: share("postgres"), app: share("app"), redis: share("redis") };
}

function fits(kind: HostKind, hostMiB: number): boolean {
  const s = shares(kind, hostMiB);
  return s.postgres >= MINIMUM.postgres && s.app >= MINIMUM.app && s.redis >= MINIMUM.redis;
}

/** The smallest host of this kind the budget accepts, in MiB. */
export function minimumHostMiB(kind: HostKind): number {
  let lo = 1;
  let hi = 1 << 20;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(kind, mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The budget, with a host too small refused as a configuration error naming
 * the key that sets its memory: serverType on Hetzner, memoryMiB otherwise.
 */
export function hostMemoryBudget(kind: HostKind, host: { provider: string; memoryMiB: number; serverType?: string }): MemoryBudget {
  try {
    return memoryBudget(kind, host.memoryMiB);
  } catch (e) {
    if (!(e instanceof MemoryBudgetError)) throw e;
    if (host.provider === "hetzner") throw new ConfigError("serverType", `got ${JSON.stringify(host.serverType)} with ${host.memoryMiB} MiB; ${e.message.replace(/; this one has .*$/, "")}: choose a larger type`);
    throw new ConfigError("memoryMiB", `got ${host.memoryMiB}; ${e.message.replace(/; this one has .*$/, "")}`);
  }
}

/** The budget of a host of this kind and size, or a MemoryBudgetError saying how much it needs. */
export function memoryBudget(kind: HostKind, hostMiB: number): MemoryBudget {
  if (!Number.isInteger(hostMiB) || hostMiB <= 0) throw new Error(`memoryBudget: hostMiB must be a positive whole number of MiB, got ${hostMiB}`);
  const { fixed, ...share } = shares(kind, hostMiB);
  if (!fits(kind, hostMiB)) {
    const need = minimumHostMiB(kind);
    throw new MemoryBudgetError(
      need,
      `a ${KIND_NAME[kind]} needs at least ${need} MiB of memory (the OS ${osReserveMiB(need)}, ${Object.entries(fixed)
        .map(([s, m]) => `${s} ${m}`)
        .join(", ")}, and PostgreSQL, the app and Redis at least ${MINIMUM.postgres}, ${MINIMUM.app} and ${MINIMUM.redis}); this one has ${hostMiB} MiB`,
    );
  }
  const limits: Partial<Record<ServiceName, number>> = { ...fixed, ...share };
  return {
    hostMiB,
    osReserveMiB: osReserveMiB(hostMiB),
    limitsMiB: limits,
    postgresMiB: share.postgres,
    redisMaxMemoryMiB: Math.floor(share.redis * REDIS_MAXMEMORY_SHARE),
    appMaxRamPercentage: APP_MAX_RAM_PERCENTAGE,
  };
}
