import { describe, expect, it } from "vitest";
import { APP_MAX_RAM_PERCENTAGE, memoryBudget, minimumHostMiB, osReserveMiB, REDIS_MAXMEMORY_SHARE, type HostKind } from "../../lib/memory";
import { drillServerArgv } from "../../templates/backup-scheduler";

const sum = (o: Record<string, number | undefined>) => Object.values(o).reduce<number>((a, b) => a + (b ?? 0), 0);

describe("one memory budget per host", () => {
  for (const kind of ["main", "replica", "monitoringReplica"] as HostKind[]) {
    for (const hostMiB of [minimumHostMiB(kind), 4096, 8192, 16384, 32768, 131072]) {
      it(`${kind}, ${hostMiB} MiB: the OS reserve plus every container's limit fits in the host`, () => {
        const b = memoryBudget(kind, hostMiB);
        expect(b.osReserveMiB + sum(b.limitsMiB)).toBeLessThanOrEqual(hostMiB);
        // Nothing is left idle beyond rounding: the shares take the rest.
        expect(hostMiB - b.osReserveMiB - sum(b.limitsMiB)).toBeLessThan(3);
        expect(b.postgresMiB).toBe(b.limitsMiB.postgres);
        expect(b.redisMaxMemoryMiB).toBeLessThanOrEqual(b.limitsMiB.redis! * REDIS_MAXMEMORY_SHARE);
        expect(b.appMaxRamPercentage).toBe(APP_MAX_RAM_PERCENTAGE);
        expect(b.limitsMiB.prometheus !== undefined).toBe(kind !== "replica");
        expect(b.limitsMiB.alertmanager !== undefined).toBe(kind !== "replica");
        expect(b.limitsMiB.grafana !== undefined).toBe(kind === "main");
      });
    }
  }

  it("the smallest accepted host is exactly the minimum: one MiB less is refused, saying how much is needed", () => {
    const named = { main: "main host", replica: "replica host", monitoringReplica: "monitoring replica host \\(monitoringReplica\\)" };
    for (const kind of ["main", "replica", "monitoringReplica"] as HostKind[]) {
      const min = minimumHostMiB(kind);
      expect(() => memoryBudget(kind, min)).not.toThrow();
      expect(() => memoryBudget(kind, min - 1)).toThrow(new RegExp(`a ${named[kind]} needs at least ${min} MiB of memory .* this one has ${min - 1} MiB`));
    }
    // 2 GB: too small for a main host (monitoring runs there), enough for a replica.
    expect(() => memoryBudget("main", 2048)).toThrow(/needs at least/);
    expect(() => memoryBudget("replica", 2048)).not.toThrow();
  });

  it("the OS keeps a tenth of the host, at least 256 MiB", () => {
    expect(osReserveMiB(2048)).toBe(256);
    expect(osReserveMiB(8192)).toBe(819);
  });

  it("grows PostgreSQL, the app and Redis with the host, the fixed services not", () => {
    const small = memoryBudget("main", 4096);
    const big = memoryBudget("main", 16384);
    for (const s of ["postgres", "app", "redis"] as const) expect(big.limitsMiB[s]!).toBeGreaterThan(3 * small.limitsMiB[s]!);
    for (const s of ["nginx", "prometheus", "alertmanager", "grafana", "nodeExporter"] as const) expect(big.limitsMiB[s]).toBe(small.limitsMiB[s]);
  });

  it("Alertmanager has 64 MiB on the main host, taken from Prometheus' former 512: monitoring's total is unchanged", () => {
    const b = memoryBudget("main", 4096);
    expect(b.limitsMiB.alertmanager).toBe(64);
    expect(b.limitsMiB.prometheus! + b.limitsMiB.alertmanager!).toBe(512);
    expect(memoryBudget("replica", 4096).limitsMiB.alertmanager).toBeUndefined();
  });

  it("the backup scheduler (128 MiB) and pgBackRest's TLS server (64 MiB) on every host raise each minimum by as much; a 2 GB replica still fits", () => {
    for (const kind of ["main", "replica"] as HostKind[]) {
      expect(memoryBudget(kind, 4096).limitsMiB.backup).toBe(128);
      expect(memoryBudget(kind, 4096).limitsMiB.pgbackrestServer).toBe(64);
    }
    expect(minimumHostMiB("main")).toBe(2844);
    expect(minimumHostMiB("replica")).toBe(2048);
  });

  it("the scheduler's limit holds the restore drill's throwaway server: shared buffers of 16 MB, a handful of connections (measured in test/integration/backup-drill.test.ts)", () => {
    const argv = drillServerArgv("/var/lib/synaxic-backup/drill", "pgbackrest --pg1-path=/var/lib/synaxic-backup/drill/data archive-get %f %p");
    expect(argv).toContain("shared_buffers=16MB");
    expect(argv).toContain("max_connections=10");
    for (const kind of ["main", "replica", "monitoringReplica"] as HostKind[]) expect(memoryBudget(kind, minimumHostMiB(kind)).limitsMiB.backup).toBe(128);
  });

  it("the monitoring replica: Prometheus and Alertmanager with main's shares, no Grafana; only that replica needs more than 2 GB", () => {
    const mon = memoryBudget("monitoringReplica", 4096);
    const main = memoryBudget("main", 4096);
    expect(mon.limitsMiB.prometheus).toBe(main.limitsMiB.prometheus);
    expect(mon.limitsMiB.alertmanager).toBe(main.limitsMiB.alertmanager);
    expect(mon.limitsMiB.grafana).toBeUndefined();
    // Its monitoring comes out of PostgreSQL, the app and Redis: a replica of the same size has more for them.
    expect(mon.postgresMiB).toBeLessThan(memoryBudget("replica", 4096).postgresMiB);
    // Every other replica keeps its 2 GB minimum; the monitoring replica needs 2560 MiB (a 4 GB server).
    expect(minimumHostMiB("replica")).toBe(2048);
    expect(minimumHostMiB("monitoringReplica")).toBe(2560);
    expect(() => memoryBudget("monitoringReplica", 2048)).toThrow(/a monitoring replica host \(monitoringReplica\) needs at least 2560 MiB/);
  });
});
