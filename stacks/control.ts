/**
 * The control stack: no host of its own. It says which host is the fleet's
 * primary under a generation number, fences the former primary before any
 * other host is told to take writes, and records the fence. Host stacks with
 * `controlStack` read its `control` output (readControl) and take their role
 * from it (lib/control.ts hostRole).
 */
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import type { ControlStackConfig } from "../lib/config";
import { ConfigError } from "../lib/config";
import { INITIAL_CONTROL, checkControlOutput, hostRole, nextControl, type ControlInfo, type Demotion, type HostRole } from "../lib/control";
import { remoteStep, type HostShell } from "../lib/remote";
import { sh } from "../lib/shell";
import { ownStack } from "./ownStack";
import { fencedContainers, renderPoweroffProgram, renderStopScript } from "../templates/fence";

export async function controlStack(cfg: ControlStackConfig) {
  // The last deployed state, from this stack's own outputs: a change is
  // checked against it (the generation only rises, the old primary is fenced).
  const self = ownStack("self");
  const deployed = await self.getOutputValue("control");
  const previous: ControlInfo = deployed === undefined ? INITIAL_CONTROL : checkControlOutput(pulumi.getStack(), deployed);
  const { next, demotion } = nextControl(previous, { primary: cfg.primary, primaryGeneration: cfg.primaryGeneration, fence: cfg.fence });

  const fence = demotion ? await fenceStep(cfg, demotion, next.generation) : undefined;
  // Recorded only once the fence has run: a failed fence leaves the stack's
  // output, and so every host's role, as it was.
  const control: pulumi.Output<ControlInfo> = fence ? fence.stdout.apply(() => next) : pulumi.output(next);
  // Where each host's stack is: a primary reads whether a fenced host has rejoined (rejoinedHosts).
  return { control, hostStacks: cfg.hostStacks };
}

async function fenceStep(cfg: ControlStackConfig, demotion: Demotion, generation: number): Promise<command.remote.Command | command.local.Command | undefined> {
  const name = `fence-${demotion.host}-g${generation}`;
  if (demotion.method === "acknowledged") return undefined;
  const ref = new pulumi.StackReference(`host-${demotion.host}`, { name: cfg.hostStacks[demotion.host]! });
  if (demotion.method === "poweroff") {
    const serverId = await ref.getOutputValue("hetznerServerId");
    if (typeof serverId !== "number") {
      throw new ConfigError(`fence.${demotion.host}`, `is poweroff, but stack ${cfg.hostStacks[demotion.host]} has no Hetzner server (output hetznerServerId); use stop, or acknowledged for an existing host you cannot reach`);
    }
    return new command.local.Command(name, {
      create: sh(["node", "-e", renderPoweroffProgram(), String(serverId)]),
      environment: { HCLOUD_TOKEN: cfg.secrets.hcloudToken! },
      logging: "stdoutAndStderr",
      addPreviousOutputInEnv: false,
    });
  }
  const [address, hostKey, user, port] = await Promise.all(["publicAddress", "hostKey", "sshUser", "sshPort"].map((k) => ref.getOutputValue(k)));
  if (typeof address !== "string" || typeof hostKey !== "string" || typeof user !== "string") {
    throw new ConfigError(`hostStacks.${demotion.host}`, `names stack ${cfg.hostStacks[demotion.host]}, which has no publicAddress, hostKey and sshUser outputs; run \`pulumi up\` on it with this version of the program`);
  }
  const shell: HostShell = {
    kind: "ssh",
    connection: pulumi.secret(
      cfg.secrets.sshPrivateKey!.apply((privateKey) => ({ host: address, port: typeof port === "number" ? port : 22, user, privateKey, hostKey, dialErrorLimit: 3, perDialTimeout: 10 })),
    ),
    sudo: user !== "root",
    filesRoot: "/etc/synaxic",
  };
  return remoteStep(name, shell, { argv: ["sh", "-c", renderStopScript(), "sh", ...fencedContainers(demotion.host)], timeoutSeconds: cfg.commandTimeoutSeconds }, {}) as command.remote.Command;
}

/**
 * What a host stack exports for the control stack (and the status command):
 * how to reach the host, and the control state it was built under. A fenced
 * former primary that came back as a standby also exports the generation it
 * did so under (rejoinedGeneration), once its PostgreSQL is ready (streaming):
 * the other hosts then close its pg_rewind line (rejoinedHosts).
 */
export function hostAccessOutputs(
  host: { publicAddress: pulumi.Output<string>; hostKey: pulumi.Output<string>; sshUser: string; sshPort: number; hetznerServerId?: pulumi.Output<number> },
  controlled: { stack: string; control: ControlInfo } | undefined,
  postgres?: { mode: string; ready: pulumi.CustomResource },
) {
  return {
    publicAddress: host.publicAddress,
    hostKey: host.hostKey,
    sshUser: host.sshUser,
    sshPort: host.sshPort,
    ...(host.hetznerServerId ? { hetznerServerId: host.hetznerServerId } : {}),
    // The status command finds the control stack from here, and tells a stack left at an older generation.
    ...(controlled ? { controlStack: controlled.stack, controlGeneration: controlled.control.generation, primary: controlled.control.primary } : {}),
    ...(controlled && postgres?.mode === "rejoin" ? { rejoinedGeneration: postgres.ready.id.apply(() => controlled.control.generation) } : {}),
  };
}

/**
 * A host stack's role from the control stack it names. Read as plain values
 * (known at preview too), checked, and turned into the settings the host is
 * built from.
 */
export async function readControl(controlStackName: string, hostName: string, fleetHosts: readonly string[]): Promise<{ stack: string; control: ControlInfo; role: HostRole; rejoined: string[] }> {
  const ref = new pulumi.StackReference("control", { name: controlStackName });
  const control = checkControlOutput(controlStackName, await ref.getOutputValue("control"));
  const role = hostRole(control, hostName, fleetHosts);
  const hostStacks = await ref.getOutputValue("hostStacks");
  const rejoined = await rejoinedHosts(control, hostName, typeof hostStacks === "object" && hostStacks !== null ? (hostStacks as Record<string, string>) : {});
  return { stack: controlStackName, control, role, rejoined };
}

/**
 * The fenced former primaries that are back as standbys: each one whose
 * stack (as the control stack's hostStacks names it) reports that its
 * PostgreSQL came up rewound under the generation that fenced it or a later
 * one (rejoinedGeneration). Its data then has standby.signal and never needs
 * pg_rewind again, so its rewind line closes. A fenced host whose stack the
 * control stack does not name (an acknowledged fence) keeps its line.
 */
export async function rejoinedHosts(control: ControlInfo, self: string, hostStacks: Readonly<Record<string, string>>): Promise<string[]> {
  const out: string[] = [];
  for (const [host, f] of Object.entries(control.fenced)) {
    const stack = hostStacks[host];
    if (host === self || host === control.primary || !stack) continue;
    const g = await new pulumi.StackReference(`rejoined-${host}`, { name: stack }).getOutputValue("rejoinedGeneration");
    if (typeof g === "number" && g >= f.generation) out.push(host);
  }
  return out;
}

/**
 * The addresses that may rewind against `self` under the control stack's
 * state: the former primaries it records as fenced (they come back through
 * pg_rewind) and that have not rejoined yet, not every fleet member.
 * pg_rewind's role reads files of the data directory, so its pg_hba line
 * stays closed to hosts that do not need it.
 */
export function fencedAddresses(control: ControlInfo, self: string, addressOf: (host: string) => string | undefined, rejoined: readonly string[] = []): string[] {
  return Object.keys(control.fenced)
    .filter((h) => h !== self && !rejoined.includes(h))
    .map(addressOf)
    .filter((a): a is string => a !== undefined);
}
