/**
 * Redis throughput over TLS and plain TCP, and a replica's offset under a
 * steady write rate, on the integration rig, for the runner (bench/all.ts,
 * section "redis"; a new replica's full sync is bench/redis-sync.ts's).
 *
 * A master from the rendered redis.conf (TLS only, ACL users, AOF) with one
 * line added for the baseline: a plain TCP port on the same server, so that
 * both runs meet the same process and configuration. One replica (rendered
 * replica configuration) streams from it over TLS. It measures, asserting
 * nothing:
 *   1. redis-benchmark (Debian's redis-tools) SET and GET requests/s from an
 *      app host as the app user, over TLS and over the plain port,
 *      alternating, `runs` times each: the ratio TLS / plain of the medians;
 *   2. the replica's offset gap while one TLS client sends SETs at a fixed
 *      rate (default 30,000/s, pipelined in 10 ms batches): the master's
 *      master_repl_offset minus the replica's, asked every 100 ms over open
 *      connections (the replica first, so the gap is never understated), in
 *      bytes.
 */
import { connect } from "node:tls";
import { readFileSync } from "node:fs";
import { waitFor, type Host, type TestNet } from "../test/rig/net";
import { makeCa } from "../test/rig/pki";
import { execIn, randomRedisUsers, RedisServer, waitInSync, waitNoChild, type RedisCredentials } from "../test/rig/redis";
import { renderRedisAcl, renderRedisConf } from "../templates/redis";
import { log } from "./rig-run";
import { fmtPercentiles, fmtSpread, num, ratio, spreadOf } from "./report";

export interface Options {
  /** redis-benchmark runs per transport. */
  runs: number;
  /** Requests per redis-benchmark run (each of SET and GET). */
  requests: number;
  clients: number;
  /** Value size in bytes. */
  valueBytes: number;
  /** SETs per second for the offset gap. */
  rate: number;
  /** Seconds at that rate. */
  seconds: number;
}

export const DEFAULTS: Options = { runs: 3, requests: 200_000, clients: 50, valueBytes: 256, rate: 30_000, seconds: 30 };
export const QUICK: Options = { runs: 1, requests: 20_000, clients: 50, valueBytes: 256, rate: 30_000, seconds: 5 };

/** The rig hosts bench() needs. */
export const HOSTS = ["main", "replica1", "app"];

const TLS_PORT = 6380;
const PLAIN_PORT = 6379;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** requests/s per test from redis-benchmark --csv ("SET","41152.26",...). */
export function benchmarkCsv(out: string): Record<string, number> {
  const rps: Record<string, number> = {};
  for (const line of out.split("\n")) {
    const m = /^"([A-Z_ ]+?)(?: \([^)]*\))?","([\d.]+)"/.exec(line.trim());
    if (m) rps[m[1]!] = Number(m[2]);
  }
  return rps;
}

async function redisBenchmark(app: Host, master: RedisServer, tls: boolean, opts: Options, auth: RedisCredentials): Promise<Record<string, number>> {
  const argv = ["redis-benchmark", "-h", master.host.ip, "-p", String(tls ? TLS_PORT : PLAIN_PORT), "--user", auth.user, "-a", auth.pass];
  if (tls) argv.push("--tls", "--cacert", master.caFile);
  argv.push("-t", "set,get", "-n", String(opts.requests), "-c", String(opts.clients), "-d", String(opts.valueBytes), "-r", "100000", "--csv");
  const r = await execIn(app, argv, { timeoutMs: 30 * 60_000 });
  const rps = benchmarkCsv(r.stdout);
  if (r.code !== 0 || rps.SET === undefined || rps.GET === undefined) throw new Error(`redis-benchmark (${tls ? "TLS" : "plain"}) failed (${r.code}): ${r.stdout}${r.stderr}`);
  return rps;
}

/**
 * One TLS connection sending SETs at `rate` per second in 10 ms pipelined
 * batches, never more than a second's worth unanswered. Every reply to a
 * SET is "+OK\r\n", so the replies are counted in bytes.
 */
class RateWriter {
  private timer?: NodeJS.Timeout;
  private replyBytes = 0;
  sent = 0;
  /** The first error reply, if any (the counts are then off). */
  error?: string;
  private readonly socket;

  constructor(
    master: RedisServer,
    auth: RedisCredentials,
    private readonly rate: number,
    valueBytes: number,
  ) {
    this.socket = connect({ host: master.host.ip, port: TLS_PORT, ca: readFileSync(master.caFile) });
    this.socket.on("data", (d: Buffer) => {
      const text = d.toString("latin1");
      if (this.error === undefined && /(^|\n)-/.test(text)) this.error = text.slice(text.search(/(^|\n)-/), 200);
      this.replyBytes += d.length;
    });
    this.socket.on("error", () => undefined);
    this.socket.write(resp(["AUTH", auth.user, auth.pass]));
    this.value = "v".repeat(valueBytes);
  }

  private readonly value: string;

  get authenticated(): boolean {
    return this.replyBytes >= 5;
  }

  get acked(): number {
    return Math.max(0, this.replyBytes / 5 - 1);
  }

  start(): void {
    const perTick = Math.round(this.rate / 100);
    const t0 = Date.now();
    const tick = () => {
      // Catch up with the clock, so that timer slack does not lower the rate.
      const due = Math.floor(((Date.now() - t0) / 10 + 1) * perTick);
      let batch = "";
      while (this.sent < due && this.sent - this.acked < this.rate) {
        batch += resp(["SET", `rate:${this.sent % 100_000}`, this.value]);
        this.sent++;
      }
      if (batch) this.socket.write(batch);
      this.timer = setTimeout(tick, 10);
    };
    tick();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.socket.end();
  }
}

/**
 * A TLS connection kept open for INFO replication, so that a sample costs a
 * round trip and two servers can be asked within a fraction of a millisecond.
 */
class InfoSession {
  private readonly socket;
  private buffer = Buffer.alloc(0);
  private waiting: ((reply: string) => void)[] = [];

  constructor(server: RedisServer, auth: RedisCredentials) {
    this.socket = connect({ host: server.host.ip, port: TLS_PORT, ca: readFileSync(server.caFile) });
    this.socket.on("error", () => undefined);
    this.socket.on("data", (d: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, d]);
      for (;;) {
        const eol = this.buffer.indexOf("\r\n");
        if (eol < 0) return;
        const head = this.buffer.subarray(0, eol).toString("latin1");
        let reply: string;
        if (head.startsWith("$")) {
          const len = Number(head.slice(1));
          if (this.buffer.length < eol + 2 + len + 2) return;
          reply = this.buffer.subarray(eol + 2, eol + 2 + len).toString("latin1");
          this.buffer = this.buffer.subarray(eol + 2 + len + 2);
        } else {
          reply = head;
          this.buffer = this.buffer.subarray(eol + 2);
        }
        this.waiting.shift()?.(reply);
      }
    });
    void this.send(["AUTH", auth.user, auth.pass]);
  }

  private send(words: readonly string[]): Promise<string> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.socket.write(resp(words));
    });
  }

  /** master_repl_offset from INFO replication (on a replica: the offset it has processed). */
  async offset(): Promise<number> {
    const m = /^master_repl_offset:(\d+)/m.exec(await this.send(["INFO", "replication"]));
    if (!m) throw new Error("INFO replication without master_repl_offset");
    return Number(m[1]);
  }

  close(): void {
    this.socket.end();
  }
}

function resp(words: readonly string[]): string {
  return `*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join("")}`;
}

export async function bench(opts: Options, net: TestNet, add: (label: string, value: string) => void): Promise<void> {
  const [mainHost, replicaHost, app] = HOSTS.map((h) => net.host(h)) as [Host, Host, Host];
  const ca = makeCa("redis-tls-ca", net.mkdir("pki"));
  const mCert = ca.issue("redis-main", [mainHost.ip]);
  const rCert = ca.issue("redis-replica1", [replicaHost.ip]);
  const users = randomRedisUsers();
  const acl = renderRedisAcl(users);
  const master = RedisServer.create(net, mainHost, "master", { caPem: ca.certPem, certPem: mCert.certPem, keyPem: mCert.keyPem }, TLS_PORT);
  const rendered = renderRedisConf({ role: "master", bind: [mainHost.ip, "127.0.0.1"], port: TLS_PORT, ...master.paths, announce: { ip: mainHost.ip, port: TLS_PORT } });
  // The baseline's one addition: a plain TCP port on the same server (the rendered file says `port 0`; the last `port` wins).
  await master.start(`${rendered}\n# benchmark baseline only: plain TCP beside TLS\nport ${PLAIN_PORT}\n`, acl);
  const replica = RedisServer.create(net, replicaHost, "replica", { caPem: ca.certPem, certPem: rCert.certPem, keyPem: rCert.keyPem }, TLS_PORT);
  await replica.start(
    renderRedisConf({
      role: "replica",
      bind: [replicaHost.ip, "127.0.0.1"],
      port: TLS_PORT,
      ...replica.paths,
      announce: { ip: replicaHost.ip, port: TLS_PORT },
      masterHost: mainHost.ip,
      masterPort: TLS_PORT,
      masterUser: users.replication.name,
      masterPassword: users.replication.password,
    }),
    acl,
  );
  try {
    await waitInSync(mainHost, master.target, replica.target, users.app);

    // 1. TLS against plain, alternating.
    const tls: Record<string, number>[] = [];
    const plain: Record<string, number>[] = [];
    for (let run = 0; run < opts.runs; run++) {
      for (const useTls of run % 2 === 0 ? [true, false] : [false, true]) {
        const r = await redisBenchmark(app, master, useTls, opts, users.app);
        (useTls ? tls : plain).push(r);
        log(`run ${run + 1}/${opts.runs} ${useTls ? "TLS  " : "plain"}: SET ${r.SET!.toFixed(0)}/s, GET ${r.GET!.toFixed(0)}/s`);
      }
    }
    add("redis-benchmark", `-c ${opts.clients} -n ${opts.requests} -d ${opts.valueBytes}, from an app host as the app user, ${opts.runs} run(s) per transport, alternating`);
    for (const t of ["SET", "GET"]) {
      const a = tls.map((r) => r[t]!);
      const b = plain.map((r) => r[t]!);
      add(`  ${t} over TLS`, fmtSpread(a, 0, "requests/s"));
      add(`  ${t} plain (baseline)`, fmtSpread(b, 0, "requests/s"));
      add(`  ${t} TLS / plain`, `${num(ratio(spreadOf(a)?.median, spreadOf(b)?.median), 2)} (medians)`);
    }

    // 2. The replica's offset gap at a fixed SET rate.
    await waitInSync(mainHost, master.target, replica.target, users.app, 120_000);
    const writer = new RateWriter(master, users.app, opts.rate, opts.valueBytes);
    await waitFor("the rate writer's AUTH", async () => writer.authenticated, 10_000, 50);
    const gaps: number[] = [];
    const masterInfo = new InfoSession(master, users.app);
    const replicaInfo = new InfoSession(replica, users.app);
    const start = Date.now();
    writer.start();
    try {
      while (Date.now() - start < opts.seconds * 1000) {
        const next = Date.now() + 100;
        // The replica is asked first, so the master's offset is read no earlier: the gap is never understated.
        const [r, m] = await Promise.all([replicaInfo.offset(), masterInfo.offset()]);
        gaps.push(m - r);
        await sleep(Math.max(0, next - Date.now()));
      }
    } finally {
      writer.stop();
      masterInfo.close();
      replicaInfo.close();
    }
    const elapsed = (Date.now() - start) / 1000;
    const achieved = writer.acked / elapsed;
    const synced = Date.now();
    await waitInSync(mainHost, master.target, replica.target, users.app, 60_000);
    log(`rate writer: ${writer.sent} SETs sent, ${writer.acked.toFixed(0)} answered in ${elapsed.toFixed(1)} s; offset gap ${fmtPercentiles(gaps, 0, "bytes")}`);
    add(`offset gap at ${opts.rate} SET/s`, `${fmtPercentiles(gaps, 0, "bytes")}; master minus replica offset, sampled every 100 ms (replica asked first)`);
    add("  SETs answered", `${achieved.toFixed(0)}/s over ${elapsed.toFixed(1)} s (${opts.valueBytes}-byte values, one TLS connection, 10 ms batches)`);
    add("  replica in sync after the writer stopped", `${Date.now() - synced} ms`);
    if (writer.error) add("  error reply from the master", writer.error);
  } finally {
    // After a full sync a replica writes its initial AOF and refuses to shut down until it is written.
    await waitNoChild(replicaHost, replica.localTarget, users.app).catch(() => undefined);
    await replica.stop();
    await master.stop();
  }
}
