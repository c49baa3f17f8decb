/**
 * PostgreSQL sizing after PGTune (le0pard/pgtune), "web application" profile,
 * Linux, SSD storage, PostgreSQL 15. The formulas follow PGTune's
 * configuration selectors; all memory values are computed in kB exactly as
 * PGTune does and printed with its unit rule (GB or MB only when exact).
 */

const KB_PER_MB = 1024;
const KB_PER_GB = 1024 * 1024;

export interface PgTuneInput {
  /** Memory the PostgreSQL server may use, in MiB (the container's limit or the host's RAM). */
  memoryMiB: number;
  /** CPUs available to PostgreSQL. */
  cpus: number;
  /** max_connections. */
  maxConnections: number;
}

export interface PgTuneParallel {
  maxWorkerProcesses: number;
  maxParallelWorkersPerGather: number;
  maxParallelWorkers: number;
  maxParallelMaintenanceWorkers: number;
}

export interface PgTune {
  maxConnections: number;
  sharedBuffersKb: number;
  effectiveCacheSizeKb: number;
  maintenanceWorkMemKb: number;
  checkpointCompletionTarget: number;
  walBuffersKb: number;
  defaultStatisticsTarget: number;
  randomPageCost: number;
  effectiveIoConcurrency: number;
  workMemKb: number;
  hugePages: "try" | "off";
  jit: "off";
  walCompression: "lz4";
  minWalSizeKb: number;
  maxWalSizeKb: number;
  /** Parallel worker settings; null below 4 CPUs (PGTune leaves the defaults then). */
  parallel: PgTuneParallel | null;
  /** Only set from 16 CPUs on (null: PostgreSQL's default of 3). */
  autovacuumMaxWorkers: number | null;
  /** Only set when maintenance_work_mem reaches 2GB (null: use maintenance_work_mem). */
  autovacuumWorkMemKb: number | null;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new Error(`pgTune: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** Computes the PGTune "web application" settings (Linux, SSD, PostgreSQL 15). */
export function pgTune(input: PgTuneInput): PgTune {
  const memoryMiB = positiveInt("memoryMiB", input.memoryMiB);
  const cpus = positiveInt("cpus", input.cpus);
  const maxConnections = positiveInt("maxConnections", input.maxConnections);
  const totalKb = memoryMiB * KB_PER_MB;

  const sharedBuffersKb = Math.floor(totalKb / 4);
  const effectiveCacheSizeKb = Math.floor((totalKb * 3) / 4);

  // RAM/16, capped at 8GB (the Linux cap).
  const maintenanceWorkMemKb = Math.min(Math.floor(totalKb / 16), 8 * KB_PER_GB);

  // 3% of shared_buffers, at most 16MB, rounded up to 16MB when above 14MB, at least 32kB.
  let walBuffersKb = Math.floor((3 * sharedBuffersKb) / 100);
  const maxWalBuffers = 16 * KB_PER_MB;
  if (walBuffersKb > maxWalBuffers) walBuffersKb = maxWalBuffers;
  if (walBuffersKb > 14 * KB_PER_MB && walBuffersKb < maxWalBuffers) walBuffersKb = maxWalBuffers;
  if (walBuffersKb < 32) walBuffersKb = 32;

  let parallel: PgTuneParallel | null = null;
  if (cpus >= 4) {
    parallel = {
      maxWorkerProcesses: cpus,
      maxParallelWorkersPerGather: Math.min(Math.ceil(cpus / 2), 4),
      maxParallelWorkers: cpus,
      maxParallelMaintenanceWorkers: Math.min(Math.ceil(cpus / 2), 4),
    };
  }

  // (RAM - shared_buffers) / ((max_connections + max_worker_processes) * 3),
  // max_worker_processes being PostgreSQL's default (8) when PGTune does not set it;
  // floored at 4MB.
  const workers = parallel ? parallel.maxWorkerProcesses : 8;
  let workMemKb = Math.floor((totalKb - sharedBuffersKb) / ((maxConnections + workers) * 3));
  if (workMemKb < 4 * KB_PER_MB) workMemKb = 4 * KB_PER_MB;

  const twoGb = 2 * KB_PER_GB;
  return {
    maxConnections,
    sharedBuffersKb,
    effectiveCacheSizeKb,
    maintenanceWorkMemKb,
    checkpointCompletionTarget: 0.9,
    walBuffersKb,
    defaultStatisticsTarget: 100,
    randomPageCost: 1.1,
    effectiveIoConcurrency: 200,
    workMemKb,
    hugePages: sharedBuffersKb >= twoGb ? "try" : "off",
    jit: "off",
    walCompression: "lz4",
    minWalSizeKb: 1024 * KB_PER_MB,
    maxWalSizeKb: 4096 * KB_PER_MB,
    parallel,
    autovacuumMaxWorkers: cpus >= 32 ? 5 : cpus >= 16 ? 4 : null,
    autovacuumWorkMemKb: maintenanceWorkMemKb >= twoGb ? twoGb : null,
  };
}

/** PGTune's unit rule: GB or MB only when the value is an exact multiple, else kB. */
export function formatKb(kb: number): string {
  if (kb % KB_PER_GB === 0) return `${kb / KB_PER_GB}GB`;
  if (kb % KB_PER_MB === 0) return `${kb / KB_PER_MB}MB`;
  return `${kb}kB`;
}

/** The settings as ordered (name, value) pairs, in PGTune's order and notation. */
export function pgTuneSettings(t: PgTune): [string, string][] {
  const out: [string, string][] = [
    ["max_connections", String(t.maxConnections)],
    ["shared_buffers", formatKb(t.sharedBuffersKb)],
    ["effective_cache_size", formatKb(t.effectiveCacheSizeKb)],
    ["maintenance_work_mem", formatKb(t.maintenanceWorkMemKb)],
    ["checkpoint_completion_target", String(t.checkpointCompletionTarget)],
    ["wal_buffers", formatKb(t.walBuffersKb)],
    ["default_statistics_target", String(t.defaultStatisticsTarget)],
    ["random_page_cost", String(t.randomPageCost)],
    ["effective_io_concurrency", String(t.effectiveIoConcurrency)],
    ["work_mem", formatKb(t.workMemKb)],
    ["huge_pages", t.hugePages],
    ["jit", t.jit],
    ["wal_compression", t.walCompression],
  ];
  if (t.autovacuumMaxWorkers !== null) out.push(["autovacuum_max_workers", String(t.autovacuumMaxWorkers)]);
  if (t.autovacuumWorkMemKb !== null) out.push(["autovacuum_work_mem", formatKb(t.autovacuumWorkMemKb)]);
  out.push(["min_wal_size", formatKb(t.minWalSizeKb)], ["max_wal_size", formatKb(t.maxWalSizeKb)]);
  if (t.parallel) {
    out.push(
      ["max_worker_processes", String(t.parallel.maxWorkerProcesses)],
      ["max_parallel_workers_per_gather", String(t.parallel.maxParallelWorkersPerGather)],
      ["max_parallel_workers", String(t.parallel.maxParallelWorkers)],
      ["max_parallel_maintenance_workers", String(t.parallel.maxParallelMaintenanceWorkers)],
    );
  }
  return out;
}
