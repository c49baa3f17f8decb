import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { containerName } from "../lib/addresses";
import type { HostContext } from "../lib/hostContext";
import type { HostShell } from "../lib/remote";

/** A small pinned image whose only job is to hold a host's network namespace. */
export const ANCHOR_IMAGE = "busybox:1.36.1";

export interface LocalHostArgs {
  hostName: string;
  /** This host's address on the shared network that stands for the private network. */
  privateIp: string;
  privateNetworkName: pulumi.Input<string>;
  /** Folder on this machine where the program keeps this host's files. */
  filesRoot: string;
  cpus: number;
  memoryMiB: number;
  /** Ports of this host to make reachable on this machine's loopback (the balancer). */
  publish?: { port: number; localPort: number }[];
}

/**
 * A VPS stood in for on this machine's Docker engine: an anchor container
 * holds the host's network namespace, on a Docker network of its own and on
 * the shared network that stands for the private network, with the host's
 * private address. Every service container of the host joins that
 * namespace, so the services bind addresses exactly as on a VPS.
 */
export class LocalHost extends pulumi.ComponentResource implements HostContext {
  public readonly hostName: string;
  public readonly shell: HostShell;
  public readonly networkMode: pulumi.Output<string>;
  public readonly dockerProvider: docker.Provider;
  public readonly cpus: number;
  public readonly memoryMiB: number;
  public readonly privateIp: string;

  constructor(name: string, args: LocalHostArgs, opts: pulumi.ComponentResourceOptions & { dockerProvider: docker.Provider }) {
    super("synaxic:components:LocalHost", name, {}, opts);
    const parent = { parent: this, provider: opts.dockerProvider };
    this.hostName = args.hostName;
    this.cpus = args.cpus;
    this.memoryMiB = args.memoryMiB;
    this.privateIp = args.privateIp;
    this.dockerProvider = opts.dockerProvider;
    this.shell = { kind: "local", filesRoot: args.filesRoot };

    const own = new docker.Network(`${name}-network`, { name: `synaxic-local-${args.hostName}`, driver: "bridge", labels: [{ label: "app", value: "synaxic" }] }, parent);
    const image = new docker.RemoteImage(`${name}-anchor-image`, { name: ANCHOR_IMAGE, keepLocally: true }, parent);
    const anchor = new docker.Container(
      `${name}-anchor`,
      {
        name: containerName(args.hostName, "host"),
        image: image.imageId,
        hostname: args.hostName,
        command: ["sleep", "2147483647"],
        restart: "unless-stopped",
        networksAdvanced: [
          { name: args.privateNetworkName, ipv4Address: args.privateIp },
          { name: own.name },
        ],
        ports: (args.publish ?? []).map((p) => ({ internal: p.port, external: p.localPort, ip: "127.0.0.1" })),
        labels: [{ label: "app", value: "synaxic" }],
      },
      { ...parent, deleteBeforeReplace: true },
    );
    // By the anchor's ID, not its name: the daemon keeps the joined
    // container's ID in HostConfig.NetworkMode, the Docker provider reads
    // network_mode back from there and replaces a container whose
    // network_mode differs (terraform-provider-docker
    // resource_docker_container_funcs.go: d.Set("network_mode",
    // container.HostConfig.NetworkMode); resource_docker_container.go:
    // ForceNew), so a name made every service container be replaced on
    // every `pulumi up`. A new anchor (a new namespace) still replaces them.
    this.networkMode = pulumi.interpolate`container:${anchor.id}`;
    this.registerOutputs({ networkMode: this.networkMode });
  }
}
