/**
 * PGTune "web application" profile (Linux, SSD, PostgreSQL 15). Expected
 * values are worked out by hand from PGTune's formulas (le0pard/pgtune,
 * configurationSlice.js), in kB as PGTune computes them:
 *   shared_buffers = RAM/4, effective_cache_size = 3/4 RAM,
 *   maintenance_work_mem = min(RAM/16, 8GB),
 *   wal_buffers = 3% of shared_buffers, max 16MB, 16MB when above 14MB, min 32kB,
 *   work_mem = max(4MB, (RAM - shared_buffers) / ((max_connections + workers) * 3))
 *     with workers = CPUs from 4 CPUs on, else PostgreSQL's default 8,
 *   parallel settings only from 4 CPUs: workers = CPUs, per gather and
 *     maintenance = min(ceil(CPUs/2), 4),
 *   autovacuum_max_workers 4 from 16 CPUs, 5 from 32,
 *   autovacuum_work_mem = 2GB once maintenance_work_mem reaches 2GB.
 */
import { describe, expect, it } from "vitest";
import { formatKb, pgTune, pgTuneSettings } from "../../lib/pgtune";

const MB = 1024;
const GB = 1024 * 1024;

interface Case {
  input: { memoryMiB: number; cpus: number; maxConnections: number };
  sharedBuffersKb: number;
  effectiveCacheSizeKb: number;
  maintenanceWorkMemKb: number;
  walBuffersKb: number;
  workMemKb: number;
  hugePages: "try" | "off";
  parallel: [number, number, number, number] | null;
  autovacuumMaxWorkers: number | null;
  autovacuumWorkMemKb: number | null;
}

const cases: [string, Case][] = [
  [
    "4 GB, 2 CPUs, 100 connections",
    {
      input: { memoryMiB: 4096, cpus: 2, maxConnections: 100 },
      sharedBuffersKb: 1 * GB,
      effectiveCacheSizeKb: 3 * GB,
      maintenanceWorkMemKb: 256 * MB,
      walBuffersKb: 16 * MB, // 3% of 1GB = 31457kB, capped
      workMemKb: 9709, // (4194304 - 1048576) / ((100 + 8) * 3) = 9709.03
      hugePages: "off",
      parallel: null,
      autovacuumMaxWorkers: null,
      autovacuumWorkMemKb: null,
    },
  ],
  [
    "16 GB, 8 CPUs, 200 connections",
    {
      input: { memoryMiB: 16384, cpus: 8, maxConnections: 200 },
      sharedBuffersKb: 4 * GB,
      effectiveCacheSizeKb: 12 * GB,
      maintenanceWorkMemKb: 1 * GB,
      walBuffersKb: 16 * MB,
      workMemKb: 20164, // 12582912 / ((200 + 8) * 3) = 20164.92
      hugePages: "try",
      parallel: [8, 4, 8, 4],
      autovacuumMaxWorkers: null,
      autovacuumWorkMemKb: null,
    },
  ],
  [
    "64 GB, 16 CPUs, 300 connections",
    {
      input: { memoryMiB: 65536, cpus: 16, maxConnections: 300 },
      sharedBuffersKb: 16 * GB,
      effectiveCacheSizeKb: 48 * GB,
      maintenanceWorkMemKb: 4 * GB,
      walBuffersKb: 16 * MB,
      workMemKb: 53092, // 50331648 / ((300 + 16) * 3) = 53092.45
      hugePages: "try",
      parallel: [16, 4, 16, 4],
      autovacuumMaxWorkers: 4,
      autovacuumWorkMemKb: 2 * GB,
    },
  ],
  [
    "256 GB, 32 CPUs, 20 connections (maintenance_work_mem capped at 8GB)",
    {
      input: { memoryMiB: 262144, cpus: 32, maxConnections: 20 },
      sharedBuffersKb: 64 * GB,
      effectiveCacheSizeKb: 192 * GB,
      maintenanceWorkMemKb: 8 * GB, // 16GB uncapped
      walBuffersKb: 16 * MB,
      workMemKb: 1290555, // 201326592 / ((20 + 32) * 3) = 1290555.08
      hugePages: "try",
      parallel: [32, 4, 32, 4],
      autovacuumMaxWorkers: 5,
      autovacuumWorkMemKb: 2 * GB,
    },
  ],
  [
    "2000 MB, 2 CPUs, 50 connections (wal_buffers rounded up to 16MB)",
    {
      input: { memoryMiB: 2000, cpus: 2, maxConnections: 50 },
      sharedBuffersKb: 512000,
      effectiveCacheSizeKb: 1536000,
      maintenanceWorkMemKb: 128000,
      walBuffersKb: 16 * MB, // 3% of 512000kB = 15360kB, between 14MB and 16MB
      workMemKb: 8827, // 1536000 / ((50 + 8) * 3) = 8827.59
      hugePages: "off",
      parallel: null,
      autovacuumMaxWorkers: null,
      autovacuumWorkMemKb: null,
    },
  ],
  [
    "512 MB, 1 CPU, 1000 connections (work_mem floor)",
    {
      input: { memoryMiB: 512, cpus: 1, maxConnections: 1000 },
      sharedBuffersKb: 128 * MB,
      effectiveCacheSizeKb: 384 * MB,
      maintenanceWorkMemKb: 32 * MB,
      walBuffersKb: 3932, // 3% of 131072kB
      workMemKb: 4 * MB, // 393216 / 3024 = 130kB, below the 4MB floor
      hugePages: "off",
      parallel: null,
      autovacuumMaxWorkers: null,
      autovacuumWorkMemKb: null,
    },
  ],
  [
    "4 GB, 4 CPUs, 9999 connections (PGTune's own work_mem floor case)",
    {
      input: { memoryMiB: 4096, cpus: 4, maxConnections: 9999 },
      sharedBuffersKb: 1 * GB,
      effectiveCacheSizeKb: 3 * GB,
      maintenanceWorkMemKb: 256 * MB,
      walBuffersKb: 16 * MB,
      workMemKb: 4 * MB,
      hugePages: "off",
      parallel: [4, 2, 4, 2],
      autovacuumMaxWorkers: null,
      autovacuumWorkMemKb: null,
    },
  ],
  [
    "1 GB, 4 CPUs, 100 connections",
    {
      input: { memoryMiB: 1024, cpus: 4, maxConnections: 100 },
      sharedBuffersKb: 256 * MB,
      effectiveCacheSizeKb: 768 * MB,
      maintenanceWorkMemKb: 64 * MB,
      walBuffersKb: 7864, // 3% of 262144kB
      workMemKb: 4 * MB, // 786432 / ((100 + 4) * 3) = 2520kB, floored
      hugePages: "off",
      parallel: [4, 2, 4, 2],
      autovacuumMaxWorkers: null,
      autovacuumWorkMemKb: null,
    },
  ],
];

describe("pgTune (web application, SSD)", () => {
  it.each(cases)("%s", (_name, c) => {
    const t = pgTune(c.input);
    expect(t.maxConnections).toBe(c.input.maxConnections);
    expect(t.sharedBuffersKb).toBe(c.sharedBuffersKb);
    expect(t.effectiveCacheSizeKb).toBe(c.effectiveCacheSizeKb);
    expect(t.maintenanceWorkMemKb).toBe(c.maintenanceWorkMemKb);
    expect(t.walBuffersKb).toBe(c.walBuffersKb);
    expect(t.workMemKb).toBe(c.workMemKb);
    expect(t.hugePages).toBe(c.hugePages);
    expect(t.parallel && [t.parallel.maxWorkerProcesses, t.parallel.maxParallelWorkersPerGather, t.parallel.maxParallelWorkers, t.parallel.maxParallelMaintenanceWorkers]).toEqual(c.parallel);
    expect(t.autovacuumMaxWorkers).toBe(c.autovacuumMaxWorkers);
    expect(t.autovacuumWorkMemKb).toBe(c.autovacuumWorkMemKb);
    // The same for every size in this profile.
    expect(t.checkpointCompletionTarget).toBe(0.9);
    expect(t.defaultStatisticsTarget).toBe(100);
    expect(t.randomPageCost).toBe(1.1);
    expect(t.effectiveIoConcurrency).toBe(200);
    expect(t.minWalSizeKb).toBe(1 * GB);
    expect(t.maxWalSizeKb).toBe(4 * GB);
  });

  it("prints settings in PGTune's order and units", () => {
    expect(pgTuneSettings(pgTune({ memoryMiB: 16384, cpus: 8, maxConnections: 200 }))).toEqual([
      ["max_connections", "200"],
      ["shared_buffers", "4GB"],
      ["effective_cache_size", "12GB"],
      ["maintenance_work_mem", "1GB"],
      ["checkpoint_completion_target", "0.9"],
      ["wal_buffers", "16MB"],
      ["default_statistics_target", "100"],
      ["random_page_cost", "1.1"],
      ["effective_io_concurrency", "200"],
      ["work_mem", "20164kB"],
      ["huge_pages", "try"],
      ["jit", "off"],
      ["wal_compression", "lz4"],
      ["min_wal_size", "1GB"],
      ["max_wal_size", "4GB"],
      ["max_worker_processes", "8"],
      ["max_parallel_workers_per_gather", "4"],
      ["max_parallel_workers", "8"],
      ["max_parallel_maintenance_workers", "4"],
    ]);
    expect(pgTuneSettings(pgTune({ memoryMiB: 65536, cpus: 16, maxConnections: 300 }))).toContainEqual(["autovacuum_work_mem", "2GB"]);
  });

  it("uses GB or MB only when exact", () => {
    expect(formatKb(2 * GB)).toBe("2GB");
    expect(formatKb(1536 * MB)).toBe("1536MB");
    expect(formatKb(128000)).toBe("125MB");
    expect(formatKb(9709)).toBe("9709kB");
  });

  it("rejects inputs that are not positive integers", () => {
    expect(() => pgTune({ memoryMiB: 0, cpus: 2, maxConnections: 100 })).toThrow(/memoryMiB must be a positive integer/);
    expect(() => pgTune({ memoryMiB: 1024, cpus: 1.5, maxConnections: 100 })).toThrow(/cpus must be a positive integer/);
    expect(() => pgTune({ memoryMiB: 1024, cpus: 2, maxConnections: -1 })).toThrow(/maxConnections must be a positive integer/);
  });
});
