/**
 * Every performance figure of the project, measured in one run:
 * `sudo npm run bench [-- --quick] [--only S,...] [--skip S,...]`.
 *
 * Runs the sections in order, each on a fresh rig torn down at its end, and
 * prints one report: a header with the date, the CPUs and the load average,
 * each section's figures (min/median/max where repeated, ratios against the
 * baseline measured in the same run), and the load average at the end. A
 * section that fails is reported as failed with what it measured before,
 * and the next one runs. Nothing is asserted: every figure is printed.
 * --quick shrinks sizes and durations for a smoke run; its figures are not
 * the project's figures.
 */
import { cpus, loadavg } from "node:os";
import { Report, RUNNER_USAGE, fmtLoad, parseRunnerArgs, type RunnerOptions, type SectionName } from "./report";
import { log, runBench, runOnRig } from "./rig-run";
import * as postgres from "./postgres";
import * as bootstrap from "./bootstrap";
import * as redisTls from "./redis-tls";
import * as redisSync from "./redis-sync";
import * as balancer from "./balancer";
import * as backup from "./backup";
import * as replication from "./replication";
import * as failover from "./failover";
import { runEngineBench } from "./engine";
import { NGINX_DEFAULTS } from "../templates/nginx";

type Add = (label: string, value: string) => void;

/** Runs body on a fresh rig of these hosts; a rig that could not run (not root) is an error. */
async function onRig(hosts: string[], body: Parameters<typeof runOnRig>[1]): Promise<void> {
  const code = await runOnRig(hosts, body);
  if (code !== 0) throw new Error(`the rig did not run (exit code ${code})`);
}

const SECTION_TITLES: Record<SectionName, string> = {
  postgres: "PostgreSQL: pgbench with 0 and 2 replicas, commit -> visible, lag; synchronous replication's cost",
  bootstrap: "Bootstrap: a new replica's base backup",
  redis: "Redis: TLS and plain, replica offset under load, a new replica's sync",
  balancer: "Balancer: upstream keep-alive, shares, writes",
  backup: "Backups: pgBackRest into object storage",
  failover: "Failover: planned and unplanned",
  engine: "Engine: pulumi up and preview on the engine tier",
};

async function runSection(name: SectionName, quick: boolean, add: Add): Promise<void> {
  switch (name) {
    case "postgres":
      return onRig(postgres.HOSTS, (net) => postgres.bench(quick ? postgres.QUICK : postgres.DEFAULTS, net, add));
    case "bootstrap":
      return onRig(bootstrap.HOSTS, (net) => bootstrap.bench(quick ? bootstrap.QUICK : bootstrap.DEFAULTS, net, add));
    case "redis":
      await onRig(redisTls.HOSTS, (net) => redisTls.bench(quick ? redisTls.QUICK : redisTls.DEFAULTS, net, add));
      return onRig(redisSync.HOSTS, (net) => redisSync.bench(quick ? { mb: 25, runs: 1 } : { mb: 250, runs: 3 }, net, add));
    case "balancer":
      return onRig(balancer.HOSTS, (net) =>
        balancer.bench({ concurrency: NGINX_DEFAULTS.concurrency, seconds: quick ? 3 : 10, warmup: quick ? 1 : 2, runs: quick ? 1 : 3, appMs: 20, writeEvery: 4 }, net, add),
      );
    case "backup": {
      const summary: backup.Summary[] = [];
      try {
        await onRig(backup.HOSTS, (net) => backup.bench({ data: "pgbench", sizeMb: quick ? 64 : 1024, runs: quick ? 1 : 3, seconds: quick ? 10 : 30, clients: 4 }, net, summary));
      } finally {
        for (const r of summary) add(r.label, r.value);
      }
      return;
    }
    case "failover": {
      const summary: replication.Summary[] = [];
      add("planned (clean stop, rendered promote SQL), under load", "");
      try {
        await onRig(replication.HOSTS, (net) => replication.bench({ seconds: quick ? 5 : 20, cut: quick ? 3 : 10 }, net, summary));
      } finally {
        for (const r of summary) add(`  ${r.label.trim()}`, `${r.value} ${r.unit}`);
      }
      add("unplanned (primary killed, replica promoted), under load", "");
      const fo = quick ? failover.QUICK : failover.DEFAULTS;
      const rounds: failover.Round[] = [];
      for (let n = 1; n <= fo.rounds; n++) await onRig(failover.HOSTS, async (net) => void rounds.push(await failover.round(net, n, fo)));
      return failover.summarize(rounds, fo, (l, v) => add(`  ${l}`, v));
    }
    case "engine":
      return runEngineBench(quick ? 1 : 2, add);
  }
}

async function mainEntry(): Promise<number> {
  let opts: RunnerOptions | "help";
  try {
    opts = parseRunnerArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  if (opts === "help") {
    process.stdout.write(RUNNER_USAGE);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write("bench: needs root (network namespaces); run with sudo\n");
    return 1;
  }
  const started = new Date();
  const loadStart = loadavg();
  const model = cpus()[0]?.model.trim() ?? "unknown model";
  const header = [
    `Synaxic fleet benchmarks, ${started.toISOString().replace(/\.\d+Z$/, "Z")}${opts.quick ? " (--quick: smoke run, not the project's figures)" : ""}`,
    `${cpus().length} CPUs (${model}); load average (1, 5, 15 min) at start: ${fmtLoad(loadStart)}`,
    `sections: ${opts.sections.join(", ")}`,
  ];
  for (const h of header) log(h);
  const report = new Report();
  for (const name of opts.sections) {
    report.section(SECTION_TITLES[name]);
    const t = Date.now();
    log(`=== ${name}: ${SECTION_TITLES[name]} (load average ${fmtLoad(loadavg())})`);
    try {
      await runSection(name, opts.quick, (label, value) => report.add(label, value));
    } catch (e) {
      report.fail(e instanceof Error ? e.message.split("\n")[0]! : String(e));
      log(`${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
    report.add("section wall time", `${((Date.now() - t) / 1000).toFixed(0)} s (load average at its end ${fmtLoad(loadavg())})`);
  }
  const footer = [
    `load average (1, 5, 15 min): start ${fmtLoad(loadStart)}, end ${fmtLoad(loadavg())}; ${cpus().length} CPUs`,
    `wall time ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s`,
  ];
  process.stdout.write(`\n${"=".repeat(78)}\n`);
  process.stdout.write(report.render(header, footer));
  return report.sections.some((s) => s.error) ? 1 : 0;
}

runBench(mainEntry);
