import type * as pulumi from "@pulumi/pulumi";
import type * as docker from "@pulumi/docker";
import type { HostShell } from "./remote";

/**
 * What the service components need from a host, whether it is a VPS
 * (components/Host.ts) or a set of containers standing for one on this
 * machine's Docker engine (components/LocalHost.ts).
 */
export interface HostContext {
  readonly hostName: string;
  /** How commands reach the host, and where the program's files live there. */
  readonly shell: HostShell;
  /** The network namespace every service container joins. */
  readonly networkMode: pulumi.Input<string>;
  readonly dockerProvider: docker.Provider;
  readonly cpus: number;
  readonly memoryMiB: number;
}
