/**
 * What the rig benchmarks share: a timestamped log, the machine's load
 * average, and running a benchmark on a fresh set of network namespaces
 * that is torn down however the run ends (an error, Ctrl-C).
 */
import { cpus, loadavg } from "node:os";
import { TestNet } from "../test/rig/net";

const t0 = Date.now();
export function log(msg: string): void {
  process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);
}

export function loadAverage(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
}

/** Runs `body` on a rig of these hosts (as root), printing the load average at start and end; returns the exit code. */
export async function runOnRig(hosts: string[], body: (net: TestNet) => Promise<void>): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write("bench: needs root (network namespaces); run with sudo\n");
    return 1;
  }
  const loadStart = loadAverage();
  log(`load average at start: ${loadStart} (${cpus().length} CPUs)`);
  const net = await TestNet.create(hosts);
  const onSignal = () => {
    log("interrupted; tearing down the rig");
    void net.destroy().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    await body(net);
  } finally {
    await net.destroy();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  process.stdout.write(`\nload average (1, 5, 15 min): start ${loadStart}, end ${loadAverage()}; ${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? "unknown model"})\n`);
  return 0;
}

/** Sets the process's exit code from a benchmark's entry point, printing what threw. */
export function runBench(entry: () => Promise<number>): void {
  entry().then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
