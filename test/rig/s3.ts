/**
 * An S3 endpoint on the rig: s3.server.mjs (a small S3-compatible store
 * that checks AWS Signature V4; see its header for what it implements) in a
 * host namespace of its own, over HTTPS with a certificate
 * from the rig's CA naming the endpoint's DNS name (pgBackRest verifies
 * object-storage certificates by DNS name only). Objects are files under
 * `root/<bucket>/`, so tests can check what the store really holds.
 */
import { mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { ChildProcess } from "node:child_process";
import { waitFor, type Host } from "./net";
import type { TestCa } from "./pki";

const SCRIPT = join(__dirname, "s3.server.mjs");

export interface S3StandInOptions {
  host: Host;
  ca: TestCa;
  /** The endpoint's DNS name (resolved on the rig by rig hosts files, see dns.ts). */
  dnsName: string;
  port: number;
  bucket: string;
  accessKey: string;
  /** The secret access key (handed to the server in a 0600 file, never in argv). */
  secretKey: string;
  /** Entries per ListObjectsV2 page (default 1000); small values exercise continuation tokens. */
  pageSize?: number;
}

export class S3StandIn {
  private proc?: ChildProcess;
  readonly root: string;
  readonly log: string;

  private constructor(
    readonly opts: S3StandInOptions,
    root: string,
    log: string,
  ) {
    this.root = root;
    this.log = log;
  }

  /** "name:port", as pgBackRest's repo1-s3-endpoint takes it. */
  get endpoint(): string {
    return `${this.opts.dnsName}:${this.opts.port}`;
  }

  static async start(opts: S3StandInOptions): Promise<S3StandIn> {
    const net = opts.host.net;
    const dir = net.mkdir("s3");
    const root = join(dir, "store");
    mkdirSync(root);
    const cert = opts.ca.issue(`s3-${opts.host.name}`, [opts.dnsName]);
    const secretFile = join(dir, "secret-key");
    writeFileSync(secretFile, opts.secretKey, { mode: 0o600 });
    const argv = [
      process.execPath, SCRIPT,
      "--listen", `${opts.host.ip}:${opts.port}`,
      "--cert", cert.certFile,
      "--key", cert.keyFile,
      "--root", root,
      "--bucket", opts.bucket,
      "--access-key", opts.accessKey,
      "--secret-key-file", secretFile,
      "--page-size", String(opts.pageSize ?? 1000),
    ];
    const { proc, log } = opts.host.spawnDaemon("s3", argv);
    const s3 = new S3StandIn(opts, root, log);
    s3.proc = proc;
    await waitFor(`S3 stand-in on ${opts.host.ip}:${opts.port}`, async () => {
      if (proc.exitCode !== null) throw new Error(`S3 stand-in exited with ${proc.exitCode}: ${net.readLog(log)}`);
      return net.readLog(log).includes("listening");
    }, 15_000, 50);
    return s3;
  }

  /** Kills the server (the endpoint then refuses connections), as an outage of the object storage. */
  async kill(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc?.pid || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    process.kill(-proc.pid, "SIGKILL");
    await gone;
  }

  /** Keys of the bucket under a prefix, with their sizes. */
  objects(prefix = ""): { key: string; size: number }[] {
    const base = join(this.root, this.opts.bucket);
    const out: { key: string; size: number }[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (!e.name.startsWith(".tmp-")) out.push({ key: relative(base, p), size: statSync(p).size });
      }
    };
    walk(base);
    return out.filter((o) => o.key.startsWith(prefix)).sort((a, b) => a.key.localeCompare(b.key));
  }

  /** Request counts by operation, from the stand-in (over the bridge, trusting the rig CA). */
  async stats(from: Host): Promise<Record<string, number>> {
    const r = await from.exec(["curl", "-sS", "--fail", "--cacert", this.opts.ca.certFile, "--resolve", `${this.endpoint}:${this.opts.host.ip}`, `https://${this.endpoint}/__rig/stats`]);
    return JSON.parse(r.stdout) as Record<string, number>;
  }
}
