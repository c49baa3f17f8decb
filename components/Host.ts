import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import * as hcloud from "@pulumi/hcloud";
import * as tls from "@pulumi/tls";
import { mkdirSync, writeFileSync, chmodSync } from "node:fs";
import { dirname, join } from "node:path";
import { userInfo } from "node:os";
import type { VpsHostConfig } from "../lib/config";
import type { HostContext } from "../lib/hostContext";
import { remoteStep, type Connection, type HostShell } from "../lib/remote";
import { defaultDaemonConfig, HETZNER_HOST_KEY_ROTATION, renderCloudInit, renderDockerInstallScript, renderHostKeyRotationScript, renderWaitReadyScript } from "../templates/host";
import { renderFirewallApplyScript, renderFirewallRemoveScript, renderNftablesRuleset } from "../templates/firewall";
import { hostFirewallRules } from "../lib/fleet";

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
  /**
   * The project's Hetzner SSH key (id) when another stack registered it:
   * Hetzner refuses a second key with the same fingerprint, so the main
   * stack registers it once and replica stacks use it. Absent: this host
   * registers it.
   */
  sshKeyId?: pulumi.Input<string>;
  /**
   * Keep the server from being deleted: Pulumi's protect plus Hetzner's
   * delete and rebuild protection, since the server's disk holds the data.
   */
  protectServer: boolean;
  firewallRules: FirewallRule[];
  commandTimeoutSeconds: number;
  /** Absolute folder for the Docker client's SSH identity (default: ~/.ssh/synaxic of the user running Pulumi). */
  identityDir?: string;
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
  /** The Hetzner server's id (a control stack powers it off through Hetzner's API to fence it); undefined for an existing host. */
  public readonly hetznerServerId?: pulumi.Output<number>;
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
  /** The Hetzner SSH key's id, on a Hetzner host (registered here or given). */
  public readonly sshKeyId?: pulumi.Output<string>;

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
    const attached: pulumi.Resource[] = [];
    if (h.provider === "hetzner") {
      // The first host key is ours: generated here, installed by cloud-init,
      // and pinned by the first connection before the server has even booted.
      // It travels in the user data, which the metadata service serves to any
      // process on the server, so it is replaced on first boot (below) by a
      // key generated on the host, and only that one is pinned afterwards.
      const hostKey = new tls.PrivateKey(`${name}-host-key`, { algorithm: "ED25519" }, parent);
      // The operator's key may be in OpenSSH or PEM form; only its public half leaves this program.
      const operatorPublicKey = sshPrivateKey.apply((k) =>
        tls
          .getPublicKey(k.includes("OPENSSH PRIVATE KEY") ? { privateKeyOpenssh: k } : { privateKeyPem: k }, parent)
          .then((r) => r.publicKeyOpenssh.trim()),
      );
      this.sshKeyId = args.sshKeyId !== undefined
        ? pulumi.output(args.sshKeyId)
        : new hcloud.SshKey(`${name}-ssh-key`, { name: `synaxic-${pulumi.getStack()}`, publicKey: pulumi.unsecret(operatorPublicKey) }, parent).id;
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
          sshKeys: [this.sshKeyId],
          firewallIds: [firewall.id.apply(Number)],
          userData,
          publicNets: [{ ipv4Enabled: true, ipv6Enabled: true }],
          // Hetzner's own guard, which also holds against the console and
          // the API; the provider needs both equal (hcloud_server docs:
          // rebuild_protection "needs to be the same as delete_protection").
          deleteProtection: args.protectServer,
          rebuildProtection: args.protectServer,
          labels: { app: "synaxic", host: args.hostName },
        },
        // `networks` is ignored: the attachment is the ServerNetwork below, and
        // a server without a network block otherwise plans to detach it
        // (hetznercloud/terraform-provider-hcloud#812).
        { ...parent, protect: args.protectServer, ignoreChanges: ["userData", "sshKeys", "networks"] },
      );
      // The private network is attached as its own resource: the server's
      // inline network block plans a detach and re-attach on every update
      // (hetznercloud/terraform-provider-hcloud#556, #790, #1176).
      if (args.networkId !== undefined) {
        attached.push(
          new hcloud.ServerNetwork(`${name}-network`, { serverId: server.id.apply(Number), networkId: args.networkId, ip: args.privateIp }, { ...parent, deleteBeforeReplace: true }),
        );
      }
      this.publicAddress = server.ipv4Address;
      this.hetznerServerId = server.id.apply(Number);
      this.hostKey = rotateHostKey(name, {
        address: server.ipv4Address,
        serverId: server.id,
        cloudInitHostKey: hostKey.publicKeyOpenssh.apply((k) => k.trim()),
        sshPrivateKey,
        timeoutSeconds: args.commandTimeoutSeconds,
        dependsOn: attached,
        parent: this,
      });
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
        ...DIAL,
      })),
    );

    const gateShell: HostShell = { kind: "ssh", connection: this.connection, sudo: user !== "root", filesRoot: "/etc/synaxic" };
    const ready = remoteStep(
      `${name}-ready`,
      gateShell,
      {
        argv: ["bash", "-s"],
        stdin: renderWaitReadyScript({ timeoutSeconds: args.commandTimeoutSeconds }),
        timeoutSeconds: args.commandTimeoutSeconds + 30,
      },
      { ...parent, dependsOn: attached },
    );
    this.dockerReady = remoteStep(
      `${name}-docker`,
      gateShell,
      {
        argv: ["bash", "-s"],
        stdin: renderDockerInstallScript({ daemonConfig: defaultDaemonConfig(), startTimeoutSeconds: 120, sshUser: user }),
        timeoutSeconds: args.commandTimeoutSeconds,
      },
      { ...parent, dependsOn: [ready] },
    );
    // The host firewall (nftables): private ports only from the peers that
    // need them, before any service listens. Taken off again with the stack.
    const firewall = remoteStep(
      `${name}-host-firewall`,
      gateShell,
      {
        argv: ["bash", "-s"],
        stdin: renderFirewallApplyScript({ ruleset: renderNftablesRuleset({ rules: hostFirewallRules(args.firewallRules, port) }) }),
        deleteArgv: ["bash", "-c", renderFirewallRemoveScript()],
        timeoutSeconds: args.commandTimeoutSeconds,
      },
      { ...parent, dependsOn: [this.dockerReady] },
    );
    // Every other step on this host (files, SQL, reloads) runs after the
    // first-boot gate, the Docker install and the firewall, like the Docker provider.
    this.shell = { ...gateShell, after: [firewall] };

    // The Docker client reaches the daemon through the system ssh. Its
    // options are kept in the state and used as they are by a later refresh
    // or destroy (which do not run this program), so they name nothing of
    // this checkout: the pinned host key travels in the options themselves,
    // and the identity is a file under the operator's home, written here on
    // every run and named after the stack and host.
    const identity = dockerIdentityName(pulumi.getOrganization(), pulumi.getProject(), pulumi.getStack(), args.hostName);
    // "~" is expanded by ssh itself, to the home of whoever runs it (ssh_config(5), IdentityFile).
    const identityFile = join(args.identityDir ?? join(userInfo().homedir, DEFAULT_IDENTITY_DIR), identity);
    const identityOpt = args.identityDir ? identityFile : `~/${DEFAULT_IDENTITY_DIR}/${identity}`;
    checkControlPath(identityFile);
    const written = sshPrivateKey.apply((key) => writeIdentityFile(identityFile, key));
    this.dockerProvider = new docker.Provider(
      `${name}-docker`,
      {
        host: pulumi.interpolate`ssh://${user}@${this.publicAddress}:${port}`,
        sshOpts: pulumi
          .all([this.publicAddress, this.hostKey, written])
          .apply(([address, hostKey]) => dockerSshOpts(identityOpt, port === 22 ? address : `[${address}]:${port}`, hostKey)),
      },
      { ...parent, dependsOn: [firewall] },
    );

    this.registerOutputs({
      publicAddress: this.publicAddress,
      privateIp: this.privateIp,
      hostKey: this.hostKey,
    });
  }
}

/** Connection settings every SSH connection of a host shares: up to 40 dials of 10 s each while a new server boots. */
const DIAL = { dialErrorLimit: 40, perDialTimeout: 10 } as const;

/**
 * The first-boot host key rotation (templates/host.ts,
 * renderHostKeyRotationScript) on a Hetzner server: one command, reached
 * with the cloud-init key pinned, whose stdout is the key generated on the
 * host. Returns that key; every other connection of the host pins it.
 *
 * After the rotation the server no longer offers the cloud-init key, so this
 * command must never connect again to the same server. What the command
 * provider does (pulumi-command v1.2.1, which this program uses):
 * - it has no Diff of its own; a change of any input is an update, and only
 *   `triggers` (provider:"replaceOnChanges") replaces
 *   (provider/pkg/provider/common/inputs.go:10,
 *   provider/pkg/provider/remote/command.go:44-48). Update always connects,
 *   running `update` or else `create` (remote/commandController.go:63-83).
 * - Delete connects only to run `delete`; with none it returns at once
 *   (remote/commandController.go:86-91). There is none here, so removing
 *   the command (or the stack) never dials the server.
 * So every input that could change while the server stays is in
 * ignoreChanges: the script and command line (a new version of this
 * program, another commandTimeoutSeconds), the operator's key (rotated by
 * the operator), the pinned cloud-init key and the dial settings. The
 * engine puts the stored value back for each ignored path before it diffs
 * (pulumi/pulumi pkg/resource/deploy/step_generator.go, processIgnoreChanges;
 * the path reaches into the secret connection, sdk/go/common/resource/
 * properties_path.go, reset: "Unwrap any secrets"), so no update is ever
 * planned. What is left is the server: `triggers` is its id, so a new
 * server (which boots with the same cloud-init key, the server's userData
 * being ignored too) replaces this command, and the replacement runs
 * `create` against the new server's address (connection.host is not
 * ignored); with the ignored paths it uses the stored values, which are the
 * same cloud-init key and whatever operator key was stored.
 *
 * The printed key is a public key; the command's stdout is checked to be one
 * ed25519 public key line before anything pins it.
 *
 * A stack deployed before this rotation existed: its first `up` creates
 * this command (the server still offers the cloud-init key), and then every
 * other command on the host gets a new connection.hostKey. That is an
 * update of each (see above), which runs its command again. It is accepted:
 * every step is idempotent, and hostFile leaves a file with the same
 * content untouched (lib/containers.ts), so PostgreSQL's restart step finds
 * nothing to restart. The Docker provider's sshOpts change too. The bridged
 * provider replaces its resources on a configuration change only for a
 * setting marked ForcesProviderReplace (pulumi-terraform-bridge #1683,
 * configDiffer.forcesProviderReplace), so the containers stay
 * (docs/operations.md, Host key rotation).
 */
export function rotateHostKey(
  name: string,
  a: {
    address: pulumi.Output<string>;
    serverId: pulumi.Output<string>;
    cloudInitHostKey: pulumi.Output<string>;
    sshPrivateKey: pulumi.Output<string>;
    timeoutSeconds: number;
    dependsOn: pulumi.Resource[];
    parent: pulumi.Resource;
  },
): pulumi.Output<string> {
  const connection = pulumi.secret(
    pulumi.all([a.address, a.cloudInitHostKey, a.sshPrivateKey]).apply(([host, hostKey, privateKey]) => ({ host, port: 22, user: "root", privateKey, hostKey, ...DIAL })),
  );
  const rotation = remoteStep(
    `${name}-host-key-rotate`,
    { kind: "ssh", connection, sudo: false, filesRoot: "/etc/synaxic" },
    {
      argv: ["bash", "-s"],
      stdin: renderHostKeyRotationScript(HETZNER_HOST_KEY_ROTATION),
      triggers: [a.serverId],
      timeoutSeconds: a.timeoutSeconds,
    },
    { parent: a.parent, dependsOn: a.dependsOn, ignoreChanges: HOST_KEY_ROTATION_IGNORED },
  );
  return (rotation as unknown as { stdout: pulumi.Output<string> }).stdout.apply((out) => parseRotatedHostKey(name, out));
}

/** The rotation command's inputs that never cause an update (see rotateHostKey). */
export const HOST_KEY_ROTATION_IGNORED = [
  "create",
  "update",
  "stdin",
  "logging",
  "addPreviousOutputInEnv",
  "connection.user",
  "connection.port",
  "connection.privateKey",
  "connection.hostKey",
  "connection.dialErrorLimit",
  "connection.perDialTimeout",
];

/** The rotation's stdout: exactly one ed25519 public key line, or an error that quotes nothing else. */
export function parseRotatedHostKey(name: string, stdout: string): string {
  const key = (stdout ?? "").trim();
  if (!/^ssh-ed25519 [A-Za-z0-9+/]+={0,3}$/.test(key)) {
    throw new Error(`${name}: the host key rotation printed ${JSON.stringify(key.slice(0, 120))}, not one ssh-ed25519 public key`);
  }
  return key;
}

/** Below the home of the user running Pulumi, unless SYNAXIC_SSH_DIR says otherwise. */
export const DEFAULT_IDENTITY_DIR = ".ssh/synaxic";

/** The identity file's name: one per stack and host, so stacks never overwrite each other's. */
export function dockerIdentityName(organization: string, project: string, stack: string, hostName: string): string {
  return [organization, project, stack, hostName].join("-").replace(/[^A-Za-z0-9._-]/g, "_");
}

/**
 * ssh options for the Docker client: our identity only, and the pinned host
 * key only. The key is given through KnownHostsCommand (OpenSSH 8.5 or later,
 * ssh_config(5)), which prints it in known_hosts form, with every known_hosts
 * file turned off, so that nothing but that key is trusted and no file of
 * this machine is needed to check it.
 */
export function dockerSshOpts(identityFile: string, hostPattern: string, hostKey: string): string[] {
  const [type, body] = hostKey.trim().split(/\s+/);
  if (!type || !body || !/^[A-Za-z0-9+/=]+$/.test(body) || !/^[a-z0-9-]+$/.test(type)) throw new Error(`dockerSshOpts: ${JSON.stringify(hostKey)} is not a public key line`);
  if (!/^[A-Za-z0-9.:[\]-]+$/.test(hostPattern)) throw new Error(`dockerSshOpts: ${JSON.stringify(hostPattern)} is not a host or [host]:port`);
  if (!/^[A-Za-z0-9~/._-]+$/.test(identityFile)) throw new Error(`dockerSshOpts: ${JSON.stringify(identityFile)} is not a plain path`);
  return [
    "-o", `IdentityFile=${identityFile}`,
    "-o", "IdentitiesOnly=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", `KnownHostsCommand=/bin/echo ${hostPattern} ${type} ${body}`,
    "-o", "ConnectTimeout=15",
    "-o", "ServerAliveInterval=15",
    // One SSH connection per host for the Docker client's many requests
    // (each request the provider makes opens a new `ssh ... docker system
    // dial-stdio`, docker/cli cli/connhelper), instead of a handshake each,
    // which under `pulumi up`'s parallelism meets sshd's MaxStartups. The
    // socket sits beside the identity, in the 0700 folder; %C is a hash of
    // the local host, remote host, port and user (ssh_config(5)). The master
    // detaches with stdin, stdout and stderr on /dev/null (OpenSSH ssh.c,
    // control_persist_detach: stdfd_devnull), so it never holds the pipes of
    // the client that started it.
    "-o", "ControlMaster=auto",
    "-o", `ControlPath=${controlPath(identityFile)}`,
    "-o", "ControlPersist=60",
  ];
}

/** The control socket's path, in the identity's folder ("%C" is expanded by ssh). */
export function controlPath(identityFile: string): string {
  return `${identityFile.replace(/[^/]*$/, "")}cm-%C`;
}

/**
 * The longest control socket path ssh can create: "%C" becomes 40 hex
 * digits, and while it creates the socket ssh adds "." and 16 random
 * characters (mux.c, muxserver_listen); a Unix socket's path has at most 103
 * bytes on macOS (104 with its NUL; Linux allows 107).
 */
const CONTROL_PATH_MAX = 103;

/** Refuses, with the fix, an identity folder too long for ssh's control socket. */
export function checkControlPath(identityFile: string): void {
  const expanded = controlPath(identityFile).replace("%C", "x".repeat(40)).length + 17;
  if (expanded > CONTROL_PATH_MAX) {
    throw new Error(
      `the Docker client's SSH control socket would be ${expanded} bytes long below ${identityFile.replace(/[^/]*$/, "")} (Unix sockets allow ${CONTROL_PATH_MAX}): set SYNAXIC_SSH_DIR to a shorter absolute folder (at most ${CONTROL_PATH_MAX - 17 - 44} characters), e.g. ~/.ssh/sx`,
    );
  }
}

/** Writes the SSH identity (0600) in a 0700 folder; returns its path. */
export function writeIdentityFile(path: string, privateKey: string): string {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  chmodSync(dirname(path), 0o700);
  writeFileSync(path, privateKey.endsWith("\n") ? privateKey : `${privateKey}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}
