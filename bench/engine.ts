/**
 * Engine benchmark: `sudo npm run bench:engine [-- --runs N]`.
 *
 * On the real-engine tier's hosts (test/engine), measures and prints, N times
 * each (default 2), min/median/max of:
 *   1. a cold `pulumi up` of main, and of each of two replicas, with the
 *      images already on the hosts,
 *   2. a no-op `pulumi preview` of main and of a replica,
 *   3. adding a replica end to end (main's `up`, then the new stack's `up`),
 * plus the rig image build (cached) and, when the engine's cache records
 * them, the engine's own build times. It asserts nothing.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, locateEngine, rigImages } from "../test/engine/engine";
import { EngineRig } from "../test/engine/hosts";
import { controlConfig, initControlStack, initStack, mainConfig, replicaConfig } from "../test/engine/fleet";

type Add = (label: string, value: string) => void;

function stats(label: string, xs: number[], add?: Add): void {
  const s = [...xs].sort((a, b) => a - b);
  const f = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const value = `min ${f(s[0]!)}  median ${f(s[Math.floor(s.length / 2)]!)}  max ${f(s[s.length - 1]!)}  (n=${s.length})`;
  console.log(`${label.padEnd(44)} ${value}`);
  add?.(label, value);
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = Date.now();
  await fn();
  return Date.now() - t;
}

/** Runs the engine benchmark `runs` times and prints it; `add` receives the summary's rows as well (bench/all.ts). */
export async function runEngineBench(runs: number, add?: Add): Promise<void> {
  const { paths, missing } = locateEngine();
  if (missing.length > 0) {
    console.log(`engine benchmark skipped: the Pulumi engine is not installed here (missing ${missing.join(", ")})`);
    add?.("skipped", `the Pulumi engine is not installed here (missing ${missing.join(", ")})`);
    return;
  }
  const t = Date.now();
  const images = rigImages();
  console.log(`rig images (cached when built before): ${((Date.now() - t) / 1000).toFixed(1)} s`);

  const m = { upMain: [] as number[], upReplica: [] as number[], previewMain: [] as number[], previewReplica: [] as number[], addReplica: [] as number[] };
  for (let i = 0; i < runs; i++) {
    const rig = await EngineRig.create(["main", "replica-1", "replica-2", "replica-3"], images);
    // A short folder: the operator's SSH control sockets live below it, and Unix socket paths are limited to 103 bytes.
    const work = mkdtempSync(join(tmpdir(), "sxb-"));
    try {
      const engine = new Engine(paths, join(work, "backend"));
      await engine.installPlugins();
      const co = engine.checkout(join(work, "checkout"));
      // Host stacks take their role from the control stack (mainConfig names it), which comes first.
      await initControlStack(co, rig, controlConfig(["main", "replica-1", "replica-2", "replica-3"]));
      await co.up("control");
      await initStack(co, rig, "main", mainConfig(rig, ["replica-1", "replica-2"]));
      m.upMain.push(await timed(() => co.up("main")));
      for (const r of ["replica-1", "replica-2"]) {
        await initStack(co, rig, r, replicaConfig(rig, r));
        m.upReplica.push(await timed(() => co.up(r)));
      }
      m.previewMain.push(await timed(() => co.previewChanges("main")));
      m.previewReplica.push(await timed(() => co.previewChanges("replica-1")));
      m.addReplica.push(
        await timed(async () => {
          co.writeConfig("main", { replicas: ["replica-1", "replica-2", "replica-3"].map((r) => `${r}=${rig.host(r).ip}`) });
          await co.up("main");
          await initStack(co, rig, "replica-3", replicaConfig(rig, "replica-3"));
          await co.up("replica-3");
        }),
      );
    } finally {
      await rig.destroy();
      rmSync(work, { recursive: true, force: true });
    }
  }
  console.log("");
  stats("cold up of main (images present)", m.upMain, add);
  stats("cold up of a replica (images present)", m.upReplica, add);
  stats("no-op preview of main", m.previewMain, add);
  stats("no-op preview of a replica", m.previewReplica, add);
  stats("adding a replica end to end", m.addReplica, add);

  const times = join(paths.dir, "build-times.tsv");
  if (existsSync(times)) {
    console.log("\nengine build times recorded in its cache (go build, 2 cores):");
    for (const line of readFileSync(times, "utf8").trim().split("\n").slice(1)) {
      const [what, seconds, note] = line.split("\t");
      console.log(`  ${what!.padEnd(36)} ${seconds!.padStart(5)} s  ${note ?? ""}`);
    }
  }
}

// Run from the command line; bench/all.ts imports runEngineBench() instead.
if (require.main === module) {
  const runs = Number(process.argv.includes("--runs") ? process.argv[process.argv.indexOf("--runs") + 1] : 2);
  runEngineBench(runs).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
