/**
 * Alertmanager and amtool (Debian's prometheus-alertmanager 0.25.0) for
 * integration tests, and the receivers its notifications reach: an HTTP
 * catcher (generic webhook, Slack-shaped incoming webhook, heartbeat) and an
 * SMTP catcher. The catchers run in the test process and listen on the
 * net's own address on the bridge, so Alertmanager in a namespace reaches
 * them as it would reach an outside service.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from "node:net";
import { waitFor, type Host } from "./net";

export const ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager";
export const AMTOOL_BIN = "/usr/bin/amtool";

/** Runs amtool; resolves with its output and exit code, never rejects on a non-zero exit. */
export function amtool(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(AMTOOL_BIN, [...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

export interface AmAlert {
  labels: Record<string, string>;
  status: { state: "active" | "suppressed" | "unprocessed"; inhibitedBy: string[]; silencedBy: string[] };
  receivers: { name: string }[];
  fingerprint: string;
}

export interface AlertmanagerOptions {
  port?: number;
  /** Cluster gossip: listen here (host:port) and join these peers; absent: no cluster (HA mode off). */
  cluster?: { listen: string; peers: readonly string[] };
  /** The --cluster.* flags as the deployment renders them (templates/alertmanager.ts); replaces `cluster`. */
  clusterFlags?: readonly string[];
  /** More flags, e.g. a shorter --cluster.peer-timeout. */
  extraArgs?: readonly string[];
}

export class AlertmanagerServer {
  private proc: ChildProcess | undefined;
  readonly url: string;
  readonly port: number;
  log = "";

  constructor(
    readonly host: Host,
    readonly configFile: string,
    readonly dataDir: string,
    readonly opts: AlertmanagerOptions = {},
  ) {
    this.port = opts.port ?? 9093;
    this.url = `http://${host.ip}:${this.port}`;
  }

  get address(): string {
    return `${this.host.ip}:${this.port}`;
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async start(): Promise<this> {
    const cluster = this.opts.cluster;
    const { proc, log } = this.host.spawnDaemon(`alertmanager-${this.port}`, [
      ALERTMANAGER_BIN,
      `--config.file=${this.configFile}`,
      `--storage.path=${this.dataDir}`,
      `--web.listen-address=${this.address}`,
      ...(this.opts.clusterFlags
        ? this.opts.clusterFlags
        : cluster
          ? [`--cluster.listen-address=${cluster.listen}`, ...cluster.peers.map((p) => `--cluster.peer=${p}`), "--cluster.settle-timeout=5s", "--cluster.pushpull-interval=5s"]
          : ["--cluster.listen-address="]),
      ...(this.opts.extraArgs ?? []),
      "--log.level=debug",
    ]);
    this.proc = proc;
    this.log = log;
    await waitFor(`alertmanager on ${this.host.name} (log ${log})`, async () => {
      if (proc.exitCode !== null) throw new Error(`alertmanager exited with ${proc.exitCode}; see ${log}`);
      const r = await fetch(`${this.url}/-/ready`, { signal: AbortSignal.timeout(1000) });
      return r.ok;
    }, 30_000, 100);
    return this;
  }

  /** Stops it: SIGTERM, or SIGKILL to simulate a host that vanished. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc?.pid || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    try {
      process.kill(-proc.pid, signal);
    } catch {
      return;
    }
    await gone;
  }

  async alerts(): Promise<AmAlert[]> {
    const r = await fetch(`${this.url}/api/v2/alerts`, { signal: AbortSignal.timeout(5000) });
    if (!r.ok) throw new Error(`alertmanager alerts: ${r.status}`);
    return (await r.json()) as AmAlert[];
  }

  async status(): Promise<{ cluster: { status: string; peers: { name: string; address: string }[] }; config: { original: string } }> {
    const r = await fetch(`${this.url}/api/v2/status`, { signal: AbortSignal.timeout(5000) });
    if (!r.ok) throw new Error(`alertmanager status: ${r.status}`);
    return (await r.json()) as { cluster: { status: string; peers: { name: string; address: string }[] }; config: { original: string } };
  }
}

// ---------------------------------------------------------------------------
// Receivers
// ---------------------------------------------------------------------------

export interface CaughtRequest {
  path: string;
  method: string;
  contentType: string;
  body: string;
  at: number;
  /** The sender's address: which host's Alertmanager sent it. */
  remote: string;
}

/** An HTTP endpoint that answers 200 to every POST and records it (webhook, Slack-shaped, heartbeat). */
export class HttpCatcher {
  readonly requests: CaughtRequest[] = [];
  private server: HttpServer | undefined;
  port = 0;

  constructor(readonly address: string) {}

  get base(): string {
    return `http://${this.address}:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        this.requests.push({ path: req.url ?? "", method: req.method ?? "", contentType: String(req.headers["content-type"] ?? ""), body: Buffer.concat(chunks).toString("utf8"), at: Date.now(), remote: (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "") });
        // Slack answers "ok"; a generic webhook only needs a 2xx.
        res.writeHead(200, { "content-type": "text/plain" }).end("ok");
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(0, this.address, () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  on(path: string): CaughtRequest[] {
    return this.requests.filter((r) => r.path === path);
  }

  /** The JSON bodies POSTed to a path. */
  json<T>(path: string): T[] {
    return this.on(path).map((r) => JSON.parse(r.body) as T);
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

export interface CaughtMail {
  from: string;
  to: string[];
  authUser: string;
  authPassword: string;
  data: string;
  at: number;
}

/**
 * A minimal SMTP server (RFC 5321 commands Alertmanager's Go client sends:
 * EHLO, AUTH LOGIN, MAIL, RCPT, DATA, QUIT) that keeps every message. It
 * offers AUTH LOGIN and no STARTTLS: Go's PLAIN refuses to send a password
 * over plain text to anything but localhost, Alertmanager's own LOGIN does
 * not (notify/email/email.go, v0.25.0), so LOGIN exercises the password
 * file here; a deployment keeps require_tls on.
 */
export class SmtpCatcher {
  readonly mails: CaughtMail[] = [];
  private server: TcpServer | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(readonly address: string) {}

  async start(): Promise<this> {
    this.server = createTcpServer((socket) => this.session(socket));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(0, this.address, () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get smarthost(): string {
    return `${this.address}:${this.port}`;
  }

  private session(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => undefined);
    const send = (line: string) => socket.write(`${line}\r\n`);
    let buffer = "";
    let state: "command" | "data" | "auth-user" | "auth-pass" = "command";
    let mail: CaughtMail = { from: "", to: [], authUser: "", authPassword: "", data: "", at: 0 };
    let authUser = "";
    let authPassword = "";
    const b64 = (s: string) => Buffer.from(s, "base64").toString("utf8");
    send("220 synaxic-smtp-catcher ESMTP");
    socket.on("data", (chunk: Buffer) => {
      buffer += chunk.toString("utf8");
      for (;;) {
        const i = buffer.indexOf("\r\n");
        if (i < 0) return;
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        if (state === "data") {
          if (line === ".") {
            this.mails.push({ ...mail, authUser, authPassword, at: Date.now() });
            mail = { from: "", to: [], authUser: "", authPassword: "", data: "", at: 0 };
            state = "command";
            send("250 2.0.0 queued");
          } else {
            mail.data += `${line.startsWith("..") ? line.slice(1) : line}\n`;
          }
          continue;
        }
        if (state === "auth-user") {
          authUser = b64(line);
          state = "auth-pass";
          send(`334 ${Buffer.from("Password:").toString("base64")}`);
          continue;
        }
        if (state === "auth-pass") {
          authPassword = b64(line);
          state = "command";
          send("235 2.7.0 Authentication successful");
          continue;
        }
        const verb = line.split(" ")[0]!.toUpperCase();
        if (verb === "EHLO" || verb === "HELO") {
          socket.write("250-synaxic-smtp-catcher\r\n250-AUTH LOGIN\r\n250 8BITMIME\r\n");
        } else if (verb === "AUTH") {
          const [, mech, initial] = line.split(" ");
          if (mech?.toUpperCase() !== "LOGIN") {
            send("504 5.5.4 only LOGIN");
          } else if (initial) {
            authUser = b64(initial);
            state = "auth-pass";
            send(`334 ${Buffer.from("Password:").toString("base64")}`);
          } else {
            state = "auth-user";
            send(`334 ${Buffer.from("Username:").toString("base64")}`);
          }
        } else if (verb === "MAIL") {
          mail.from = /<([^>]*)>/.exec(line)?.[1] ?? "";
          send("250 2.1.0 ok");
        } else if (verb === "RCPT") {
          mail.to.push(/<([^>]*)>/.exec(line)?.[1] ?? "");
          send("250 2.1.5 ok");
        } else if (verb === "DATA") {
          state = "data";
          send("354 end with <CRLF>.<CRLF>");
        } else if (verb === "RSET") {
          mail = { from: "", to: [], authUser: "", authPassword: "", data: "", at: 0 };
          send("250 ok");
        } else if (verb === "NOOP") {
          send("250 ok");
        } else if (verb === "QUIT") {
          send("221 bye");
          socket.end();
        } else {
          send("502 5.5.2 not implemented");
        }
      }
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/**
 * A scrape target whose exposition text the test sets: stands in for the
 * exporters, so an alert's condition is whatever the test writes.
 */
export class MetricsEndpoint {
  text = "";
  private server: HttpServer | undefined;
  port = 0;

  constructor(readonly address: string) {}

  get target(): string {
    return `${this.address}:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createHttpServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(this.text);
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(0, this.address, () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
