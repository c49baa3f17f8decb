/**
 * Balancer keep-alive benchmark on the integration rig:
 * `sudo npm run bench:balancer [-- --concurrency N --seconds N --runs N --app-ms N]`.
 *
 * Runs the rendered nginx.conf (Debian's nginx, worker_processes auto) in the
 * "main" namespace in front of app stubs on main, replica1 and replica2, and
 * drives N concurrent keep-alive clients (default: the template's default
 * concurrency) in a closed loop, every fourth request a write. After a
 * warm-up it counts, for a fixed window, the upstream connections nginx
 * opened (an nftables counter on its SYNs) and closed (opened minus the
 * change in established upstream connections), the requests answered and the
 * clients' spread over the workers. It does so for the old fixed pool (32
 * per group), for the sizing from concurrency (concurrency per app in each
 * group) and, for comparison, for concurrency per group without the per-app
 * factor, rotating their order from run to run, and prints min/median/max
 * over the runs, with the machine's load average at the start and the end.
 * It asserts nothing; the rig is always torn down.
 *
 * nginx also closes an upstream connection after 1000 requests on it
 * (upstream keepalive_requests, left at its default). With the stubs taking
 * --app-ms 20, one connection serves at most 50 requests/s, so a window and
 * warm-up under 20 s together see none of those.
 */
import { log, runBench, runOnRig } from "./rig-run";
import { TestNet, type Host } from "../test/rig/net";
import { AppStub } from "../test/rig/appStub";
import { ConnectCounter, KeepAliveClients, NginxInstance, establishedByPid } from "../test/rig/nginx";
import { NGINX_DEFAULTS, renderNginxConf, upstreamKeepaliveFor, type NginxParams } from "../templates/nginx";

const APP_PORT = 8080;
const APPS = ["main", "replica1", "replica2"] as const;

export interface Options {
  concurrency: number;
  seconds: number;
  warmup: number;
  runs: number;
  appMs: number;
  writeEvery: number;
}

const USAGE = `usage: npm run bench:balancer -- [--concurrency N] [--seconds N] [--warmup N] [--runs N] [--app-ms N] [--write-every N]
  --concurrency N  concurrent keep-alive clients, the concurrency the balancer is sized for (default ${NGINX_DEFAULTS.concurrency})
  --seconds N      measured window of each run (default 10)
  --warmup N       seconds of load before the window (default 2)
  --runs N         runs of each sizing (default 3)
  --app-ms N       time each app stub takes to answer, standing for the app's work (default 20)
  --write-every N  every N-th request of a client is a POST (default 4; 0: reads only)
`;

export function parseArgs(argv: readonly string[]): Options {
  const opts: Options = { concurrency: NGINX_DEFAULTS.concurrency, seconds: 10, warmup: 2, runs: 3, appMs: 20, writeEvery: 4 };
  const keys: Record<string, keyof Options> = {
    "--concurrency": "concurrency",
    "--seconds": "seconds",
    "--warmup": "warmup",
    "--runs": "runs",
    "--app-ms": "appMs",
    "--write-every": "writeEvery",
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--help" || flag === "-h") {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    const key = keys[flag];
    if (!key) throw new Error(`unknown argument ${flag}\n${USAGE}`);
    const value = Number(argv[++i]);
    const min = key === "writeEvery" || key === "appMs" ? 0 : 1;
    if (!Number.isInteger(value) || value < min || value > 100_000) throw new Error(`${flag} needs a whole number >= ${min}`);
    opts[key] = value;
  }
  return opts;
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


function stats(xs: readonly number[]): { min: number; median: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { min: s[0]!, median: mid, max: s[s.length - 1]! };
}

interface Variant {
  label: string;
  params: Partial<NginxParams>;
}

interface Sample {
  requests: number;
  rps: number;
  opened: number;
  closed: number;
  errors: number;
  /** Connections the clients opened to nginx during the window (0 when every client kept its own). */
  clientConnects: number;
  /** Client connections per worker at the end of the window, largest first. */
  clientsPerWorker: number[];
  /** Upstream connections per worker at the end of the window, largest first. */
  upstreamPerWorker: number[];
  /** Reads and writes each app answered during the window, in APPS order. */
  reads: number[];
  writes: number[];
}

async function upstreamEstablished(host: Host): Promise<Map<number, number>> {
  return establishedByPid(host, `( dport = :${APP_PORT} )`);
}

function total(m: Map<number, number>): number {
  let n = 0;
  for (const v of m.values()) n += v;
  return n;
}

function sortedCounts(m: Map<number, number>): number[] {
  return [...m.values()].sort((a, b) => b - a);
}

async function measure(opts: Options, main: Host, nginx: NginxInstance, base: string, counter: ConnectCounter, variant: Variant, baseParams: NginxParams, stubs: readonly AppStub[]): Promise<Sample> {
  nginx.writeConf(renderNginxConf({ ...baseParams, ...variant.params }));
  const t = await nginx.test();
  if (t.code !== 0) throw new Error(`nginx -t failed for ${variant.label}:\n${t.stderr}`);
  await nginx.start(`${base}/nginx-health`);
  const clients = new KeepAliveClients(base, { concurrency: opts.concurrency, writeEvery: opts.writeEvery, appDelayMs: opts.appMs }).start();
  try {
    await sleep(opts.warmup * 1000);
    const [opened0, alive0] = await Promise.all([counter.opened(), upstreamEstablished(main), ...stubs.map((s) => s.reset())]);
    const tally0 = clients.snapshot();
    const start = Date.now();
    await sleep(opts.seconds * 1000);
    const [opened1, alive1, clientSpread] = await Promise.all([counter.opened(), upstreamEstablished(main), establishedByPid(main, "( sport = :80 )")]);
    const tally1 = clients.snapshot();
    const answered = await Promise.all(stubs.map((s) => s.stats()));
    const seconds = (Date.now() - start) / 1000;
    const opened = opened1 - opened0;
    const requests = tally1.ok - tally0.ok;
    return {
      requests,
      rps: requests / seconds,
      opened,
      // Connections open at the start plus those opened since, minus those still open.
      closed: total(alive0) + opened - total(alive1),
      errors: tally1.errors - tally0.errors,
      clientConnects: tally1.connections - tally0.connections,
      clientsPerWorker: sortedCounts(clientSpread),
      upstreamPerWorker: sortedCounts(alive1),
      reads: answered.map((a) => a.read),
      writes: answered.map((a) => a.write),
    };
  } finally {
    await clients.stop();
    await nginx.stop();
  }
}

/**
 * Each app's share of the reads over every run of a sizing, and the writes
 * that reached the replicas' apps (the balancer sends writes to main only).
 */
function shares(ss: readonly Sample[]): string {
  const reads = APPS.map((_, a) => ss.reduce((n, s) => n + (s.reads[a] ?? 0), 0));
  const writes = APPS.map((_, a) => ss.reduce((n, s) => n + (s.writes[a] ?? 0), 0));
  const totalReads = reads.reduce((a, b) => a + b, 0);
  const share = APPS.map((name, a) => `${name} ${((100 * reads[a]!) / Math.max(1, totalReads)).toFixed(1)} %`).join(", ");
  return `read shares: ${share}; writes: ${writes[0]} to main, ${writes.slice(1).reduce((a, b) => a + b, 0)} to replicas`;
}

/** The rig hosts bench() needs. */
export const HOSTS = [...APPS];

/** Runs the measurements on a rig of HOSTS and prints them; `add` receives the summary's rows as well. */
export async function bench(opts: Options, net: TestNet, add?: (label: string, value: string) => void): Promise<void> {
  const main = net.host("main");
  const dir = net.mkdir("apps");
  const stubs = APPS.map((name) => new AppStub(net.host(name), name, APP_PORT, dir));
  await Promise.all(stubs.map((s) => s.start()));
  const nginx = new NginxInstance(main);
  const base = `http://${main.ip}`;
  const counter = await ConnectCounter.install(main, APP_PORT);
  try {
    const baseParams: NginxParams = {
      mainApp: { name: "main", address: stubs[0]!.address },
      replicaApps: stubs.slice(1).map((s) => ({ name: s.name, address: s.address })),
      listenPort: 80,
      ...nginx.paths,
      accessLog: "off",
    };
    const n = opts.concurrency;
    const variants: Variant[] = [
      { label: "old: keepalive 32 per group", params: { upstreamKeepalive: 32 } },
      {
        label: `new: concurrency ${n} per app (write ${upstreamKeepaliveFor(n, 1)}, read ${upstreamKeepaliveFor(n, APPS.length)})`,
        params: { concurrency: n },
      },
      // For comparison: the same number per group, without the factor for its apps.
      { label: `concurrency ${n} per group (no per-app factor)`, params: { upstreamKeepalive: n } },
    ];
    const samples = variants.map(() => [] as Sample[]);
    for (let run = 0; run < opts.runs; run++) {
      // Rotate which sizing goes first, so none always meets the same moment of the machine's load.
      const order = variants.map((_, i) => (i + run) % variants.length);
      for (const i of order) {
        const s = await measure(opts, main, nginx, base, counter, variants[i]!, baseParams, stubs);
        samples[i]!.push(s);
        log(
          `run ${run + 1}/${opts.runs} ${variants[i]!.label}: ${s.requests} requests (${s.rps.toFixed(0)}/s), ` +
            `upstream connections opened ${s.opened}, closed ${s.closed}, client errors ${s.errors}, client reconnects ${s.clientConnects}; ` +
            `clients per worker ${s.clientsPerWorker.join("/")}, upstream connections per worker ${s.upstreamPerWorker.join("/")}`,
        );
      }
    }

    process.stdout.write(`\nSummary (${opts.runs} runs of ${opts.seconds} s after ${opts.warmup} s warm-up; ${n} clients, every ${opts.writeEvery || "no"}th request a write, app stub ${opts.appMs} ms)\n`);
    const row = (label: string, xs: number[], digits = 0): string => {
      const s = stats(xs);
      return `    ${label.padEnd(34)} min ${s.min.toFixed(digits).padStart(7)}  median ${s.median.toFixed(digits).padStart(7)}  max ${s.max.toFixed(digits).padStart(7)}\n`;
    };
    variants.forEach((v, i) => {
      const ss = samples[i]!;
      process.stdout.write(`  ${v.label}\n`);
      process.stdout.write(row("upstream connections closed", ss.map((s) => s.closed)));
      process.stdout.write(row("  per 1000 requests", ss.map((s) => (1000 * s.closed) / Math.max(1, s.requests)), 2));
      process.stdout.write(row("upstream connections opened", ss.map((s) => s.opened)));
      process.stdout.write(row("requests/s", ss.map((s) => s.rps)));
      process.stdout.write(row("client errors", ss.map((s) => s.errors)));
      process.stdout.write(`    clients per worker at the end of each window: ${ss.map((s) => s.clientsPerWorker.join("/")).join(", ")}\n`);
      process.stdout.write(`    ${shares(ss)}\n`);
    });
    const med = (i: number, f: (s: Sample) => number) => stats(samples[i]!.map(f)).median;
    if (add) {
      const fmt = (xs: number[], digits = 0) => {
        const v = stats(xs);
        return xs.length === 1 ? v.min.toFixed(digits) : `min ${v.min.toFixed(digits)}  median ${v.median.toFixed(digits)}  max ${v.max.toFixed(digits)}`;
      };
      add("load", `${n} keep-alive clients, every ${opts.writeEvery || "no"}th request a write, app stub ${opts.appMs} ms; ${opts.runs} run(s) of ${opts.seconds} s`);
      variants.forEach((v, i) => {
        const ss = samples[i]!;
        add(v.label, "");
        add("  upstream connections closed", `${fmt(ss.map((s) => s.closed))}  (${fmt(ss.map((s) => (1000 * s.closed) / Math.max(1, s.requests)), 2)} per 1000 requests)`);
        add("  requests/s", fmt(ss.map((s) => s.rps)));
        add("  " + shares(ss).split(":")[0]!, shares(ss).split(": ").slice(1).join(": "));
      });
      add("requests/s, new / old sizing", `${(med(1, (s) => s.rps) / med(0, (s) => s.rps)).toFixed(2)} (medians)`);
    }
    process.stdout.write(
      `  new / old: closed ${med(1, (s) => s.closed)} vs ${med(0, (s) => s.closed)} (medians), requests/s ratio ${(med(1, (s) => s.rps) / med(0, (s) => s.rps)).toFixed(2)}\n`,
    );
  } finally {
    await counter.remove();
    await nginx.dispose();
  }
}

async function mainEntry(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  return runOnRig(HOSTS, (net) => bench(opts, net));
}

// Run from the command line; bench/all.ts imports bench() instead.
if (require.main === module) runBench(mainEntry);
