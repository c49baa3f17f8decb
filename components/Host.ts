import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import * as hcloud from "@pulumi/hcloud";
import * as tls from "@pulumi/tls";
import { mkdirSync, writeFileSync, chmodSync } from "node:fs";
import { join, resolve } from "node:path";
import type { VpsHostConfig } from "../lib/config";
import type { HostContext } from "../lib/hostContext";
import { remoteStep, type Connection, type HostShell } from "../lib/remote";
import { defaultDaemonConfig, renderCloudInit, renderDockerInstallScript, renderWaitReadyScript } from "../templates/host";

/** A rule of the host's cloud firewall: who may reach which port. */
export interface FirewallRule {
  description: string;
  port: number | "22";
  protocol: "tcp" | "udp";
  /** CIDRs allowed; `0.0.0.0/0` and `::/0` only for the balancer's public ports. */
  sources: string[];
}

export interface HostArgs {
  hostName: string;
  host: VpsHostConfig;
  /** This host's address on the private network that carries database, cache and monitoring traffic. */
  privateIp: pulumi.Input<string>;
  /** The operator's SSH private key (secret). Its public half is installed on Hetzner servers. */
  sshPrivateKey: pulumi.Input<string>;
  /** Hetzner private network to join (id), when the host is created on Hetzner. */
  networkId?: pulumi.Input<number>;
  firewallRules: FirewallRule[];
  commandTimeoutSeconds: number;
  /** Where the SSH identity and pinned host key for the Docker client are written (default: .state/ssh/<stack>-<host>, mode 0700). */
  sshDir?: string;
}

/**
 * One VPS: created on Hetzner (server, SSH key, firewall, private network
 * membership, pinned host key) or an existing server reached over SSH. Docker
 * is installed idempotently behind a readiness gate, and the Docker provider
 * for this host (reached over SSH with the host key pinned) is created only
 * after both have succeeded.
 */
export class Host extends pulumi.ComponentResource implements HostContext {
  public readonly publicAddress: pulumi.Output<string>;
  public readonly privateIp: pulumi.Output<string>;
  public readonly hostKey: pulumi.Output<string>;
  public readonly connection: pulumi.Output<Connection>;
  public readonly dockerProvider: docker.Provider;
  /** Every service container shares the VPS's network namespace. */
  public readonly networkMode = "host";
  /** How the program runs commands and keeps files on this host. */
  public readonly shell: HostShell;
  public readonly dockerReady: pulumi.CustomResource;
  public readonly hostName: string;
  public readonly sshUser: string;
  public readonly sshPort: number;
  public readonly cpus: number;
  public readonly memoryMiB: number;

  constructor(name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:Host", name, {}, opts);
    const parent = { parent: this };
    const h = args.host;
    this.hostName = args.hostName;
    this.cpus = h.cpus;
    this.memoryMiB = h.memoryMiB;
    this.privateIp = pulumi.output(args.privateIp);
    const sshPrivateKey = pulumi.secret(args.sshPrivateKey);

    let user: string;
    let port: number;
    if (h.provider === "hetzner") {
      // The host key is ours: generated here, installed by cloud-init, and
      // pinned by every client before the server has even booted.
      const hostKey = new tls.PrivateKey(`${name}-host-key`, { algorithm: "ED25519" }, parent);
      // The operator's key may be in OpenSSH or PEM form; only its public half leaves this program.
      const operatorPublicKey = sshPrivateKey.apply((k) =>
        tls
          .getPublicKey(k.includes("OPENSSH PRIVATE KEY") ? { privateKeyOpenssh: k } : { privateKeyPem: k }, parent)
          .then((r) => r.publicKeyOpenssh.trim()),
      );
      const sshKey = new hcloud.SshKey(`${name}-ssh-key`, { name: `synaxic-${args.hostName}`, publicKey: pulumi.unsecret(operatorPublicKey) }, parent);
      const firewall = new hcloud.Firewall(
        `${name}-firewall`,
        {
          name: `synaxic-${args.hostName}`,
          rules: args.firewallRules.map((r) => ({
            description: r.description,
            direction: "in",
            protocol: r.protocol,
            port: String(r.port),
            sourceIps: r.sources,
          })),
        },
        parent,
      );
      const userData = pulumi.secret(
        pulumi.all([hostKey.privateKeyOpenssh, hostKey.publicKeyOpenssh]).apply(([priv, pub]) =>
          renderCloudInit({ hostKeyPrivateOpenssh: priv, hostKeyPublicOpenssh: pub }),
        ),
      );
      const server = new hcloud.Server(
        `${name}-server`,
        {
          name: `synaxic-${args.hostName}`,
          serverType: h.serverType,
          image: h.osImage,
          location: h.location,
          sshKeys: [sshKey.id],
          firewallIds: [firewall.id.apply(Number)],
          userData,
          publicNets: [{ ipv4Enabled: true, ipv6Enabled: true }],
          ...(args.networkId !== undefined ? { networks: [{ networkId: args.networkId, ip: args.privateIp }] } : {}),
          labels: { app: "synaxic", host: args.hostName },
        },
        { ...parent, ignoreChanges: ["userData", "sshKeys"] },
      );
      this.publicAddress = server.ipv4Address;
      this.hostKey = hostKey.publicKeyOpenssh.apply((k) => k.trim());
      user = "root";
      port = 22;
    } else {
      this.publicAddress = pulumi.output(h.sshHost);
      this.hostKey = pulumi.output(h.sshHostKey);
      user = h.sshUser;
      port = h.sshPort;
    }

    this.sshUser = user;
    this.sshPort = port;
    this.connection = pulumi.secret(
      pulumi.all([this.publicAddress, this.hostKey, sshPrivateKey]).apply(([host, hostKey, privateKey]) => ({
        host,
        port,
        user,
        privateKey,
        hostKey,
        // Retry while a new server boots: up to 40 dials of 10 s each.
        dialErrorLimit: 40,
        perDialTimeout: 10,
      })),
    );

    this.shell = { kind: "ssh", connection: this.connection, sudo: user !== "root", filesRoot: "/etc/synaxic" };
    const ready = remoteStep(
      `${name}-ready`,
      this.shell,
      {
        argv: ["bash", "-s"],
        stdin: renderWaitReadyScript({ timeoutSeconds: args.commandTimeoutSeconds }),
        timeoutSeconds: args.commandTimeoutSeconds + 30,
      },
      parent,
    );
    this.dockerReady = remoteStep(
      `${name}-docker`,
      this.shell,
      {
        argv: ["bash", "-s"],
        stdin: renderDockerInstallScript({ daemonConfig: defaultDaemonConfig(), startTimeoutSeconds: 120 }),
        timeoutSeconds: args.commandTimeoutSeconds,
      },
      { ...parent, dependsOn: [ready] },
    );

    // The Docker client reaches the daemon through the system ssh, which
    // needs the identity and the pinned host key as files.
    const sshDir = args.sshDir ?? resolve(".state", "ssh", `${pulumi.getStack()}-${args.hostName}`);
    const sshFiles = pulumi.all([sshPrivateKey, this.publicAddress, this.hostKey]).apply(([key, address, hostKey]) =>
      writeSshFiles(sshDir, key, port === 22 ? address : `[${address}]:${port}`, hostKey),
    );
    this.dockerProvider = new docker.Provider(
      `${name}-docker`,
      {
        host: pulumi.interpolate`ssh://${user}@${this.publicAddress}:${port}`,
        sshOpts: sshFiles.apply((f) => dockerSshOpts(f.identityFile, f.knownHostsFile)),
      },
      { ...parent, dependsOn: [this.dockerReady] },
    );

    this.registerOutputs({
      publicAddress: this.publicAddress,
      privateIp: this.privateIp,
      hostKey: this.hostKey,
    });
  }
}

/** ssh options for the Docker client: our identity only, the pinned host key only. */
export function dockerSshOpts(identityFile: string, knownHostsFile: string): string[] {
  return [
    "-i", identityFile,
    "-o", "IdentitiesOnly=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", `UserKnownHostsFile=${knownHostsFile}`,
    "-o", "ConnectTimeout=15",
    "-o", "ServerAliveInterval=15",
  ];
}

/** Writes the SSH identity (0600) and a known_hosts file with the pinned host key, in a 0700 folder. */
export function writeSshFiles(dir: string, privateKey: string, hostPattern: string, hostKey: string): { identityFile: string; knownHostsFile: string } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const identityFile = join(dir, "id");
  const knownHostsFile = join(dir, "known_hosts");
  writeFileSync(identityFile, privateKey.endsWith("\n") ? privateKey : `${privateKey}\n`, { mode: 0o600 });
  chmodSync(identityFile, 0o600);
  const [type, body] = hostKey.trim().split(/\s+/);
  writeFileSync(knownHostsFile, `${hostPattern} ${type} ${body}\n`, { mode: 0o644 });
  return { identityFile, knownHostsFile };
}
