/**
 * Runs nginx (the Debian package's binary) on a rig host from a rendered
 * configuration: `nginx -t`, then nginx in the foreground until stop().
 *
 * Each instance gets its own prefix directory (world-traversable, because
 * nginx workers run as www-data and write request bodies to temp files
 * there); pid, logs and temp files all live under it.
 */
import { mkdtempSync, mkdirSync, chmodSync, writeFileSync, rmSync, readFileSync, readdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { waitFor, type ExecResult, type Host } from "./net";

export const NGINX_BIN = "/usr/sbin/nginx";

export interface NginxRigPaths {
  pidFile: string;
  errorLog: string;
  accessLog: string;
  tempDir: string;
  user: string;
}

export class NginxInstance {
  private proc: ChildProcess | undefined;
  readonly prefix: string;
  readonly confFile: string;
  /** Pass these to renderNginxConf so that nginx writes only under the prefix. */
  readonly paths: NginxRigPaths;

  constructor(readonly host: Host) {
    this.prefix = mkdtempSync(join(tmpdir(), "synaxic-nginx-"));
    chmodSync(this.prefix, 0o755);
    const tempDir = join(this.prefix, "temp");
    mkdirSync(tempDir, { mode: 0o755 });
    this.confFile = join(this.prefix, "nginx.conf");
    this.paths = {
      pidFile: join(this.prefix, "nginx.pid"),
      errorLog: join(this.prefix, "error.log"),
      accessLog: join(this.prefix, "access.log"),
      tempDir,
      user: "www-data",
    };
  }

  writeConf(conf: string): this {
    writeFileSync(this.confFile, conf);
    return this;
  }

  private args(): string[] {
    return ["-c", this.confFile, "-p", `${this.prefix}/`, "-e", this.paths.errorLog];
  }

  /** `nginx -t` on the configuration; resolves with its output and exit code. */
  async test(): Promise<ExecResult> {
    return this.host.exec([NGINX_BIN, "-t", ...this.args()], { allowFail: true });
  }

  /** Starts nginx in the foreground and waits until it answers on `probeUrl`. */
  async start(probeUrl: string): Promise<this> {
    const { proc } = this.host.spawnDaemon("nginx", [NGINX_BIN, ...this.args(), "-g", "daemon off;"]);
    this.proc = proc;
    await waitFor(`nginx on ${this.host.name}`, async () => {
      if (proc.exitCode !== null) throw new Error(`nginx exited with ${proc.exitCode}: ${this.errorLog()}`);
      const r = await fetch(probeUrl, { redirect: "manual", signal: AbortSignal.timeout(1000) });
      return r.status > 0;
    }, 15_000, 50);
    return this;
  }

  /**
   * Reloads the configuration (SIGHUP to the master) and waits until the
   * worker processes of the old one have exited: they stop accepting, finish
   * the requests they have, and exit (nginx docs, "Controlling nginx"). The
   * same steps as NGINX_RELOAD_SCRIPT (templates/nginx.ts) takes in a
   * container, with the master's children instead of the container's
   * processes. Resolves with how long the old workers took.
   */
  async reload(timeoutMs = 30_000): Promise<number> {
    const master = this.proc?.pid;
    if (!master) throw new Error("nginx is not running");
    const workers = (): number[] =>
      readdirSync("/proc")
        .filter((d) => /^\d+$/.test(d))
        .map(Number)
        .filter((pid) => {
          try {
            return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[1] === String(master);
          } catch {
            return false;
          }
        });
    const old = workers();
    const started = Date.now();
    process.kill(master, "SIGHUP");
    await waitFor("the old nginx workers to exit", async () => old.every((pid) => !existsSync(`/proc/${pid}`)), timeoutMs, 20);
    return Date.now() - started;
  }

  errorLog(): string {
    try {
      return readFileSync(this.paths.errorLog, "utf8");
    } catch {
      return "";
    }
  }

  accessLog(): string {
    try {
      return readFileSync(this.paths.accessLog, "utf8");
    } catch {
      return "";
    }
  }

  /** Stops nginx (SIGQUIT, graceful; SIGKILL after 5 s) and waits for the master to exit. */
  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc?.pid || proc.exitCode !== null || proc.signalCode !== null) return;
    const pid = proc.pid;
    const gone = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    try {
      process.kill(pid, "SIGQUIT");
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }, 5000);
    await gone;
    clearTimeout(timer);
  }

  /** Stops nginx and removes the prefix directory (kept when SYNAXIC_KEEP_RIG is set). */
  async dispose(): Promise<void> {
    await this.stop();
    if (!process.env.SYNAXIC_KEEP_RIG) rmSync(this.prefix, { recursive: true, force: true });
  }
}

export interface LoadResult {
  /** Answers per app host (x-served-by header). */
  byHost: Record<string, number>;
  /** Answers per HTTP status. */
  statuses: Record<number, number>;
  /** Requests that got no HTTP answer at all (connection error, timeout). */
  transportErrors: number;
  /** Requests answered with a status >= 400 or without a transport answer. */
  errors: number;
  /** Answers whose x-stub-write flag disagreed with the method's kind. */
  kindMismatches: number;
  ms: number;
}

export interface LoadOptions {
  method: string;
  count: number;
  concurrency: number;
  path?: string;
  body?: Buffer;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/**
 * Sends `count` requests over keep-alive connections, at most `concurrency`
 * at a time, and tallies who answered. Never throws on a failed request: it
 * counts it.
 */
export async function sendLoad(baseUrl: string, o: LoadOptions): Promise<LoadResult> {
  const url = new URL(o.path ?? "/v1/items", baseUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const isWrite = !["GET", "HEAD", "OPTIONS"].includes(o.method);
  const result: LoadResult = { byHost: {}, statuses: {}, transportErrors: 0, errors: 0, kindMismatches: 0, ms: 0 };
  const started = Date.now();
  let next = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      let settled = false;
      const fail = (): void => {
        if (settled) return;
        settled = true;
        result.transportErrors++;
        result.errors++;
        resolve();
      };
      const headers: Record<string, string | number> = { ...o.headers };
      if (o.body) headers["content-length"] = o.body.length;
      const req = http.request(url, { method: o.method, agent, headers, timeout: o.timeoutMs ?? 10_000 }, (res) => {
        res.resume();
        res.on("error", fail);
        res.on("end", () => {
          if (settled) return;
          settled = true;
          const status = res.statusCode ?? 0;
          result.statuses[status] = (result.statuses[status] ?? 0) + 1;
          if (status >= 400) result.errors++;
          const host = res.headers["x-served-by"];
          if (typeof host === "string") result.byHost[host] = (result.byHost[host] ?? 0) + 1;
          const flag = res.headers["x-stub-write"];
          if (flag !== undefined && (flag === "1") !== isWrite) result.kindMismatches++;
          resolve();
        });
      });
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", fail);
      req.end(o.body);
    });
  const worker = async (): Promise<void> => {
    while (next < o.count) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, o.count) }, worker));
  agent.destroy();
  result.ms = Date.now() - started;
  return result;
}

// ---------------------------------------------------------------------------
// Upstream connection accounting and a closed-loop load of keep-alive clients

/**
 * Counts the TCP connections a host opens to a port: an nftables counter in
 * the host's namespace on every SYN (without ACK) it sends there, so a
 * connection opened and closed between two readings is counted too.
 */
export class ConnectCounter {
  private static seq = 0;
  private constructor(
    readonly host: Host,
    readonly table: string,
  ) {}

  /** Installs the counter in `host`'s namespace for connections to `port` (any address). */
  static async install(host: Host, port: number): Promise<ConnectCounter> {
    const table = `synaxic_connect_${process.pid}_${ConnectCounter.seq++}`;
    const rules = [
      `table inet ${table} {`,
      `  counter opened { }`,
      `  chain out {`,
      `    type filter hook output priority 0; policy accept;`,
      `    tcp dport ${port} tcp flags & (syn | ack) == syn counter name "opened"`,
      `  }`,
      `}`,
      ``,
    ].join("\n");
    await host.exec(["nft", "-f", "-"], { input: rules });
    return new ConnectCounter(host, table);
  }

  /** Connections opened (SYNs sent) since install. */
  async opened(): Promise<number> {
    const r = await this.host.exec(["nft", "-j", "list", "counter", "inet", this.table, "opened"]);
    const entries = (JSON.parse(r.stdout) as { nftables: Record<string, { packets?: number }>[] }).nftables;
    const entry = entries.find((e) => e.counter !== undefined);
    const packets = entry?.counter?.packets;
    if (typeof packets !== "number") throw new Error(`no packet count in the nft counter of ${this.table}`);
    return packets;
  }

  async remove(): Promise<void> {
    await this.host.exec(["nft", "delete", "table", "inet", this.table], { allowFail: true });
  }
}

/**
 * Established TCP connections in `host`'s namespace matching an ss filter
 * (e.g. "( dport = :8080 )"), counted per owning process id.
 */
export async function establishedByPid(host: Host, filter: string): Promise<Map<number, number>> {
  const r = await host.exec(["ss", "-tnpH", "state", "established", filter]);
  const byPid = new Map<number, number>();
  for (const line of r.stdout.split("\n")) {
    const m = /pid=(\d+)/.exec(line);
    if (!m) continue;
    const pid = Number(m[1]);
    byPid.set(pid, (byPid.get(pid) ?? 0) + 1);
  }
  return byPid;
}

export interface ClientTally {
  /** Requests answered with a status below 400. */
  ok: number;
  /** Requests answered with a status >= 400 or without an answer. */
  errors: number;
  /** Connections the clients opened to the balancer (one each at the start, more if one was closed). */
  connections: number;
}

export interface KeepAliveClientsOptions {
  /** Concurrent clients, each with one keep-alive connection and one request at a time. */
  concurrency: number;
  path?: string;
  /** Every n-th request of a client is a POST (a write); 0: reads only. */
  writeEvery?: number;
  /** Sent as x-stub-delay-ms: how long the app stub takes to answer, standing for the app's own work. */
  appDelayMs?: number;
  timeoutMs?: number;
}

/**
 * N clients in a closed loop, each on its own keep-alive connection: send a
 * request, read the answer, send the next, until stop(). Tallies answers
 * and connections; never throws on a failed request.
 */
export class KeepAliveClients {
  private readonly tally: ClientTally = { ok: 0, errors: 0, connections: 0 };
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly agents: http.Agent[] = [];

  constructor(
    readonly baseUrl: string,
    readonly o: KeepAliveClientsOptions,
  ) {}

  start(): this {
    if (this.running) throw new Error("clients already running");
    this.running = true;
    const url = new URL(this.o.path ?? "/v1/items", this.baseUrl);
    const headers: Record<string, string> = this.o.appDelayMs ? { "x-stub-delay-ms": String(this.o.appDelayMs) } : {};
    for (let i = 0; i < this.o.concurrency; i++) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      this.agents.push(agent);
      const seen = new WeakSet<object>();
      const loop = async (): Promise<void> => {
        let n = 0;
        while (this.running) {
          n++;
          const write = !!this.o.writeEvery && n % this.o.writeEvery === 0;
          const status = await new Promise<number>((resolve) => {
            const req = http.request(url, { method: write ? "POST" : "GET", agent, headers, timeout: this.o.timeoutMs ?? 10_000 }, (res) => {
              res.resume();
              res.on("error", () => resolve(0));
              res.on("end", () => resolve(res.statusCode ?? 0));
            });
            req.on("socket", (s) => {
              if (!seen.has(s)) {
                seen.add(s);
                this.tally.connections++;
              }
            });
            req.on("timeout", () => req.destroy(new Error("timeout")));
            req.on("error", () => resolve(0));
            req.end(write ? "{}" : undefined);
          });
          if (status > 0 && status < 400) this.tally.ok++;
          else this.tally.errors++;
        }
      };
      this.loops.push(loop());
    }
    return this;
  }

  /** The tally so far (a copy). */
  snapshot(): ClientTally {
    return { ...this.tally };
  }

  /** Lets every client finish its request in flight, then closes their connections. */
  async stop(): Promise<ClientTally> {
    this.running = false;
    await Promise.all(this.loops);
    this.loops = [];
    for (const a of this.agents.splice(0)) a.destroy();
    return this.snapshot();
  }
}

// ---------------------------------------------------------------------------
// Raw requests and a servlet container's view of a path

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends one HTTP/1.1 request with the request target exactly as given (no
 * URL parsing: fetch and `new URL` resolve "..", "%2e" and "\" before
 * sending, so they cannot send the variants a balancer must refuse). `host`
 * null sends an HTTP/1.0 request without a Host header.
 */
export function rawRequest(address: string, port: number, target: string, o: { method?: string; host?: string | null; headers?: Record<string, string> } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: address, port });
    const chunks: Buffer[] = [];
    const version = o.host === null ? "HTTP/1.0" : "HTTP/1.1";
    const lines = [`${o.method ?? "GET"} ${target} ${version}`];
    if (o.host !== null) lines.push(`Host: ${o.host ?? address}`);
    for (const [k, v] of Object.entries(o.headers ?? {})) lines.push(`${k}: ${v}`);
    lines.push("Connection: close", "", "");
    sock.setTimeout(10_000, () => sock.destroy(new Error(`no answer to ${target} within 10 s`)));
    sock.on("connect", () => sock.write(lines.join("\r\n"), "latin1"));
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("error", reject);
    sock.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const head = text.slice(0, text.indexOf("\r\n\r\n"));
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      if (!m) return reject(new Error(`no HTTP answer to ${target}: ${JSON.stringify(text.slice(0, 200))}`));
      const headers: Record<string, string> = {};
      for (const line of head.split("\r\n").slice(1)) {
        const i = line.indexOf(":");
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      let body = text.slice(head.length + 4);
      if (/chunked/i.test(headers["transfer-encoding"] ?? "")) body = dechunk(body);
      resolve({ status: Number(m[1]), headers, body });
    });
  });
}

/** The payload of a chunked HTTP/1.1 body (RFC 9112 7.1; trailers ignored). */
function dechunk(body: string): string {
  let out = "";
  let at = 0;
  for (;;) {
    const eol = body.indexOf("\r\n", at);
    if (eol < 0) return out;
    const size = parseInt(body.slice(at, eol).split(";")[0]!, 16);
    if (!(size > 0)) return out;
    out += body.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}

/**
 * The path a servlet container maps for a raw request target, or null where
 * it answers 400. Written from Tomcat's CoyoteAdapter.postParseRequest (with
 * its default connector settings), in its order:
 * 1. parsePathParameters: every ";" starts a path parameter that runs to the
 *    next ";" or "/", and is cut out of the raw path;
 * 2. URL decoding of %XX, once; an encoded "/" (%2F) is rejected
 *    (encodedSolidusHandling "reject");
 * 3. normalize: a "\" is rejected (allowBackslash false), so is a NUL byte;
 *    "//" becomes "/", then "/./" and "/../" are resolved ("/." and "/.." at
 *    the end first get a "/"); ".." above the root is rejected.
 * The query string is not part of the path.
 */
export function servletPath(target: string): string | null {
  let raw = target.split("?")[0]!;
  raw = raw.replace(/;[^/]*/g, "");
  const bytes: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === "%") {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
      const b = parseInt(hex, 16);
      if (b === 0x2f) return null;
      bytes.push(b);
      i += 2;
    } else {
      bytes.push(raw.charCodeAt(i));
    }
  }
  let path = Buffer.from(bytes).toString("latin1");
  if (!path.startsWith("/") || path.includes("\\") || path.includes("\0")) return null;
  path = path.replace(/\/{2,}/g, "/");
  if (path.endsWith("/.") || path.endsWith("/..")) path += "/";
  while (path.includes("/./")) path = path.replace("/./", "/");
  for (let i = path.indexOf("/../"); i >= 0; i = path.indexOf("/../")) {
    if (i === 0) return null;
    const before = path.lastIndexOf("/", i - 1);
    path = path.slice(0, before) + path.slice(i + 3);
  }
  return path;
}

/** Whether the app's actuator serves a mapped path: Spring matches its routes case-sensitively. */
export function isActuatorPath(path: string | null): boolean {
  return path !== null && (path === "/actuator" || path.startsWith("/actuator/"));
}

/**
 * An app stand-in in the test process that resolves every request target as
 * servletPath does and answers with what it mapped: 400 where the container
 * would, otherwise 200 and {"path", "actuator"}. It counts the requests that
 * reached its actuator.
 */
export class ServletStub {
  private server: http.Server | undefined;
  actuatorHits = 0;
  requests = 0;
  port = 0;

  constructor(readonly address: string) {}

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => {
      this.requests++;
      const path = servletPath(req.url ?? "");
      if (path === null) {
        res.writeHead(400, { "content-type": "text/plain" }).end("Invalid URI\n");
        return;
      }
      const actuator = isActuatorPath(path);
      if (actuator) this.actuatorHits++;
      res.writeHead(200, { "content-type": "application/json", "x-served-by": "servlet" }).end(JSON.stringify({ path, actuator }));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(0, this.address, () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  get endpoint(): string {
    return `${this.address}:${this.port}`;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
