import { describe, expect, it } from "vitest";
import { Report, fmtLoad, fmtPercentiles, fmtSpread, num, parseRunnerArgs, percentile, ratio, spreadOf, extremes, SECTIONS } from "../../bench/report";

describe("bench report helpers", () => {
  it("spreads: min, median (mean of the middle two when even), max", () => {
    expect(spreadOf([])).toBeUndefined();
    expect(spreadOf([3, 1, 2])).toEqual({ min: 1, median: 2, max: 3, n: 3 });
    expect(spreadOf([4, 1, 3, 2])).toEqual({ min: 1, median: 2.5, max: 4, n: 4 });
  });

  it("extremes of more values than a call's arguments may hold (Math.max(...xs) throws RangeError there)", () => {
    const xs = Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 300_001);
    expect(() => Math.max(...xs)).toThrow(RangeError);
    expect(extremes(xs)).toEqual({ min: xs.reduce((a, b) => (b < a ? b : a)), max: xs.reduce((a, b) => (b > a ? b : a)) });
    expect(extremes([5])).toEqual({ min: 5, max: 5 });
    expect(extremes([])).toBeUndefined();
  });

  it("nearest-rank percentiles", () => {
    const xs = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile(xs, 100)).toBe(100);
    expect(percentile(xs, 0)).toBe(1);
    expect(percentile([], 50)).toBeUndefined();
  });

  it("formats numbers, spreads, percentiles and load", () => {
    expect(num(undefined)).toBe("n/a");
    expect(num(Number.NaN)).toBe("n/a");
    expect(num(1.234, 1)).toBe("1.2");
    expect(fmtSpread([2, 1, 3], 1, "s")).toBe("min 1.0  median 2.0  max 3.0 s (n=3)");
    expect(fmtSpread([2], 1, "s")).toBe("2.0 s");
    expect(fmtSpread([], 1, "s")).toBe("n/a");
    expect(fmtPercentiles([1, 2, 3, 4], 0, "ms")).toBe("p50 2  p99 4  max 4 ms (n=4)");
    expect(fmtLoad([1, 0.5, 0.25])).toBe("1.00 0.50 0.25");
  });

  it("ratios need a baseline that is not 0", () => {
    expect(ratio(2, 4)).toBe(0.5);
    expect(ratio(2, 0)).toBeUndefined();
    expect(ratio(undefined, 4)).toBeUndefined();
    expect(ratio(2, undefined)).toBeUndefined();
  });

  it("renders sections with aligned labels, failures kept with what was measured", () => {
    const r = new Report();
    r.section("A");
    r.add("short", "1");
    r.add("a longer label", "2");
    r.section("B");
    r.add("x", "3");
    r.fail("boom");
    r.section("C");
    expect(r.render(["head"], ["foot"])).toBe(
      ["head", "", "A", "  short           1", "  a longer label  2", "", "B", "  x               3", "  FAILED: boom", "", "C", "  (nothing measured)", "", "foot", ""].join("\n"),
    );
  });

  it("parses the runner's arguments", () => {
    expect(parseRunnerArgs([])).toEqual({ quick: false, sections: [...SECTIONS] });
    expect(parseRunnerArgs(["--quick", "--only", "redis,postgres"])).toEqual({ quick: true, sections: ["postgres", "redis"] });
    expect(parseRunnerArgs(["--skip", "engine", "--skip", "backup"])).toEqual({ quick: false, sections: SECTIONS.filter((s) => s !== "engine" && s !== "backup") });
    expect(parseRunnerArgs(["--help"])).toBe("help");
    expect(() => parseRunnerArgs(["--only", "nope"])).toThrow(/unknown section nope/);
    expect(() => parseRunnerArgs(["--only"])).toThrow(/needs a section/);
    expect(() => parseRunnerArgs(["--fast"])).toThrow(/unknown argument --fast/);
  });
});

describe("bench output parsers", () => {
  it("reads tps from pgbench's output", async () => {
    const { pgbenchTps } = await import("../../bench/postgres");
    const out = "number of transactions actually processed: 73530\nlatency average = 3.263 ms\ninitial connection time = 10.010 ms\ntps = 1225.584390 (without initial connection time)\n";
    expect(pgbenchTps(out)).toBeCloseTo(1225.58439);
    expect(pgbenchTps("pgbench: error: connection failed")).toBeUndefined();
    const { pgbenchLatencyMs } = await import("../../bench/postgres");
    expect(pgbenchLatencyMs(out)).toBeCloseTo(3.263);
    expect(pgbenchLatencyMs("pgbench: error: connection failed")).toBeUndefined();
  });

  it("pins replicas to another CPU when there is one", async () => {
    const { pinCpus } = await import("../../bench/postgres");
    expect(pinCpus(2)).toEqual({ primary: 0, replicas: 1 });
    expect(pinCpus(1)).toEqual({ primary: 0, replicas: 0 });
  });

  it("reads requests/s per test from redis-benchmark --csv", async () => {
    const { benchmarkCsv } = await import("../../bench/redis-tls");
    const out = [
      '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"',
      '"SET","21436.21","2.231","0.480","2.103","3.327","4.535","12.351"',
      '"GET","28776.98","1.663","0.344","1.559","2.495","3.455","9.871"',
      '"LPUSH (needed to benchmark LRANGE)","30000.00","1.0","0.1","1.0","1.0","1.0","1.0"',
    ].join("\n");
    expect(benchmarkCsv(out)).toEqual({ SET: 21436.21, GET: 28776.98, LPUSH: 30000 });
    expect(benchmarkCsv("WARNING: Could not fetch server CONFIG\n")).toEqual({});
  });
});
