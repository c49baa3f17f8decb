/**
 * Hosts for the real-engine tier: each is a network namespace with its own
 * address, its own mount and UTS namespaces (its own /run, /etc/synaxic,
 * /etc/docker, /var/lib/docker and hostname), an sshd with a generated
 * ed25519 host key, and a dockerd (Debian's docker.io) started with the exact
 * daemon.json the program writes. The program reaches them as it reaches any
 * existing server: SSH with the pinned host key, Docker over ssh://.
 *
 * Only addresses inside namespaces this module creates are ever used.
 *
 * Why these choices (each is what the software does, not a guess):
 * - `nsenter --net=` rather than `ip netns exec`: the latter remounts /sys
 *   for the namespace, which hides the cgroup hierarchy dockerd needs
 *   (iproute2 ip/ipnetns.c, netns_switch: "mount -t sysfs").
 * - `/` is made rshared inside the host's mount namespace, as systemd does at
 *   boot (systemd src/shared/mount-setup.c: MS_SHARED|MS_REC on "/"), since
 *   node-exporter binds `/` with rslave propagation, which Docker refuses on
 *   a private mount (moby daemon/oci_linux.go ensureSharedOrSlave).
 * - /run is a fresh tmpfs for each boot, as on a real host: dockerd's
 *   default socket, pidfile and exec-root live there, so `docker` on the
 *   host, `docker system dial-stdio` over SSH and the daemon all meet at
 *   /var/run/docker.sock without any flag.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { TestNet, runWrapped, waitFor, type ExecOptions, type ExecResult } from "../rig/net";
import { defaultDaemonConfig } from "../../templates/host";

const run = promisify(execFile);

/** The paths each host keeps to itself (bind-mounted from the host's directory). */
const PRIVATE_DIRS = ["/etc/synaxic", "/etc/docker", "/var/lib/docker"] as const;

export interface EngineHostKeys {
  /** The host's public key line, as `ssh-keyscan` would show it: what the stack pins. */
  hostKeyPublic: string;
}

export class EngineHost {
  private holder?: ChildProcess;
  private holderPid = 0;
  readonly dir: string;
  readonly hostKeyPublic: string;

  constructor(
    readonly name: string,
    readonly ns: string,
    readonly ip: string,
    readonly rig: EngineRig,
  ) {
    this.dir = join(rig.dir, "hosts", name);
    for (const d of ["etc-synaxic", "etc-docker", "var-lib-docker", "ssh"]) mkdirSync(join(this.dir, d), { recursive: true, mode: 0o755 });
    const key = join(this.dir, "ssh", "ssh_host_ed25519_key");
    if (!existsSync(key)) execFileSyncQuiet("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `root@${name}`, "-f", key]);
    this.hostKeyPublic = readFileSync(`${key}.pub`, "utf8").trim().split(/\s+/).slice(0, 2).join(" ");
    // The exact daemon.json the program's install step writes, so that it finds
    // nothing to change (there is no systemd here to restart the daemon).
    writeFileSync(join(this.dir, "etc-docker", "daemon.json"), `${JSON.stringify(defaultDaemonConfig(), null, 2)}\n`);
    writeFileSync(
      join(this.dir, "ssh", "sshd_config"),
      [
        `ListenAddress ${ip}`,
        "Port 22",
        `HostKey ${key}`,
        "PidFile /run/sshd.pid",
        `AuthorizedKeysFile ${join(rig.dir, "operator", "authorized_keys")}`,
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "Subsystem sftp internal-sftp",
        "",
      ].join("\n"),
    );
  }

  /** Boots the host: fresh /run, private dirs, hostname, then sshd and dockerd. */
  async boot(): Promise<void> {
    const ready = join(this.dir, "booted");
    rmSync(ready, { force: true });
    const mounts = PRIVATE_DIRS.map((d) => {
      const src = join(this.dir, d.slice(1).replace(/\//g, "-"));
      return `mkdir -p ${d} && mount --bind ${src} ${d}`;
    }).join(" && ");
    // The rig's names (EngineRig.names), as a VPS resolves its fleet's DNS
    // names: Docker gives a host-network container a copy of the host's
    // /etc/hosts (moby daemon/container_operations.go, buildSandboxOptions:
    // NetworkMode.IsHost() -> libnetwork.OptionOriginHostsPath("/etc/hosts")),
    // read by the daemon in this host's mount namespace.
    const hostsFile = join(this.dir, "hosts");
    writeFileSync(hostsFile, ["127.0.0.1 localhost", `127.0.1.1 ${this.name}`, ...Object.entries(this.rig.names).map(([n, ip]) => `${ip} ${n}`), ""].join("\n"), { mode: 0o644 });
    const script = [
      "set -e",
      "mount --make-rprivate /",
      "mount --make-rshared /",
      `hostname ${this.name}`,
      "mount -t tmpfs -o mode=0755 tmpfs /run",
      "mkdir -p /run/sshd /run/lock",
      `mount --bind ${hostsFile} /etc/hosts`,
      mounts,
      `touch ${ready}`,
      "exec sleep 2147483647",
    ].join("\n");
    const log = openSync(join(this.dir, "holder.log"), "a");
    this.holder = spawn("nsenter", [`--net=/var/run/netns/${this.ns}`, "--", "unshare", "--mount", "--uts", "--propagation", "unchanged", "--", "bash", "-c", script], {
      stdio: ["ignore", log, log],
      detached: true,
    });
    closeSync(log);
    this.holderPid = this.holder.pid!;
    await waitFor(`${this.name} namespaces`, async () => existsSync(ready), 15_000, 50);
    this.daemon("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", join(this.dir, "ssh", "sshd_config")]);
    // The daemon answers on the host's own /var/run/docker.sock and, for
    // clients on this machine (the local stack), on a socket in its folder.
    this.daemon("dockerd", ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none", "-H", "unix:///var/run/docker.sock", "-H", `unix://${this.dockerSocket}`]);
    await waitFor(`${this.name} dockerd`, async () => (await this.exec(["docker", "info", "--format", "{{.ServerVersion}}"], { allowFail: true })).code === 0, 60_000, 250);
  }

  private daemon(label: string, argv: string[]): void {
    const log = openSync(join(this.dir, `${label}.log`), "a");
    spawn("nsenter", ["-t", String(this.holderPid), "-n", "-m", "-u", "--", ...argv], { stdio: ["ignore", log, log], detached: true }).unref();
    closeSync(log);
  }

  /** The daemon's socket as seen from this machine's root namespace. */
  get dockerSocket(): string {
    return join(this.dir, "docker.sock");
  }

  /** Runs argv inside the host (its network, mounts and hostname). */
  exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (!this.holderPid) throw new Error(`${this.name} is not booted`);
    const inner = opts.user ? ["runuser", "-u", opts.user, "--", ...argv] : [...argv];
    return runWrapped(["nsenter", "-t", String(this.holderPid), "-n", "-m", "-u", "--", ...inner], this.name, argv, opts, 120_000);
  }

  /** docker on this host's daemon. */
  docker(args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(["docker", ...args], opts);
  }

  /** Every process of the host killed at once (SIGKILL), as a power cut does. */
  async powerOff(): Promise<void> {
    for (let round = 0; round < 5; round++) {
      const { stdout } = await run("ip", ["netns", "pids", this.ns]).catch(() => ({ stdout: "" }));
      const pids = stdout.split("\n").filter(Boolean).map(Number);
      if (pids.length === 0) break;
      for (const p of pids) {
        try {
          process.kill(p, "SIGKILL");
        } catch {
          /* gone */
        }
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    this.holderPid = 0;
  }
}

function execFileSyncQuiet(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** The operator's SSH key pair, the one every stack's `sshPrivateKey` holds. */
export interface OperatorKey {
  privateKeyFile: string;
  privateKey: string;
  publicKey: string;
}

export class EngineRig {
  readonly hosts = new Map<string, EngineHost>();
  readonly operator: OperatorKey;
  /** DNS names every engine host resolves (its /etc/hosts), name -> address. */
  readonly names: Record<string, string> = {};
  /** When the fleet is backed up: its repository (backupRepository) and the object storage's key. */
  backup?: {
    repository: Record<string, unknown>;
    accessKeyId: string;
    secretAccessKey: string;
    /** redisBackupPackages: the versions the stand-in Redis image holds (rigRedisBackupPackages), so the snapshot image's build downloads nothing. */
    redisBackupPackages?: Record<string, string>;
  };

  private constructor(
    readonly net: TestNet,
    readonly dir: string,
  ) {
    const opDir = join(dir, "operator");
    mkdirSync(opDir, { recursive: true, mode: 0o700 });
    const keyFile = join(opDir, "id_ed25519");
    execFileSyncQuiet("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f", keyFile]);
    const publicKey = readFileSync(`${keyFile}.pub`, "utf8").trim();
    writeFileSync(join(opDir, "authorized_keys"), `${publicKey}\n`, { mode: 0o600 });
    chmodSync(opDir, 0o755);
    this.operator = { privateKeyFile: keyFile, privateKey: readFileSync(keyFile, "utf8"), publicKey };
  }

  /** The private network's CIDR: the /24 the hosts' addresses are in. */
  get cidr(): string {
    return `${this.net.subnet}.0/24`;
  }

  /**
   * Creates and boots one host per name (addresses .1, .2, ... in order) and
   * loads the image archive into each host's daemon.
   */
  static async create(names: readonly string[], imagesTar?: string, opts: { plainHosts?: readonly string[]; dnsNames?: Record<string, string> } = {}): Promise<EngineRig> {
    // Plain hosts are namespaces with an address only (no sshd, no dockerd): a service the fleet reaches, such as object storage.
    const net = await TestNet.create([...names, ...(opts.plainHosts ?? [])]);
    const rig = new EngineRig(net, net.dir);
    try {
      for (const [dns, host] of Object.entries(opts.dnsNames ?? {})) rig.names[dns] = net.host(host).ip;
      for (const name of names) {
        const h = net.host(name);
        rig.hosts.set(name, new EngineHost(name, h.ns, h.ip, rig));
      }
      for (const host of rig.hosts.values()) await host.boot();
      if (imagesTar) await Promise.all([...rig.hosts.values()].map((h) => h.docker(["load", "-q", "-i", imagesTar], { timeoutMs: 600_000 })));
    } catch (e) {
      await rig.destroy();
      throw e;
    }
    return rig;
  }

  host(name: string): EngineHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no engine host ${name}`);
    return h;
  }

  async destroy(): Promise<void> {
    for (const h of this.hosts.values()) await h.powerOff();
    await this.net.destroy();
  }
}
