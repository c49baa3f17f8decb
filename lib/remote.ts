/**
 * Commands on a host: over SSH on a VPS, or on this machine when the hosts
 * share the local Docker engine. Every one runs a fixed argv (built with the
 * quoting helper, never holding a secret) under `timeout`, with any payload,
 * secret or not, on standard input.
 */
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { sh } from "./shell";

export type Connection = command.types.input.remote.ConnectionArgs;

/** How commands reach a host, and where the program keeps its files there. */
export type HostShell =
  | {
      kind: "ssh";
      connection: pulumi.Input<Connection>;
      sudo: boolean;
      filesRoot: string;
      /** What every step on this host waits for: the host's first-boot gate and Docker install. */
      after?: pulumi.Resource[];
    }
  | { kind: "local"; filesRoot: string; after?: pulumi.Resource[] };

export interface RemoteStepArgs {
  /** What runs on create and update (a change of triggers re-creates the step, so it runs again). */
  argv: string[];
  /** Fed to argv on standard input (a script, SQL, a file's content). */
  stdin?: pulumi.Input<string>;
  /** What runs when the resource is deleted. */
  deleteArgv?: string[];
  /** Re-run when any of these change. */
  triggers?: pulumi.Input<unknown>[];
  timeoutSeconds: number;
  /** stdout/stderr may carry something secret: keep them encrypted in state and out of logs. */
  secretOutput?: boolean;
}

/** Wraps argv so that it is killed after `seconds` (and SIGKILLed 10 s later). */
export function withTimeout(seconds: number, argv: string[]): string {
  return sh(["timeout", "--kill-after=10", String(seconds), ...argv]);
}

/** argv as root: through `sudo -n` for a non-root SSH user. */
export function asRoot(shell: HostShell, argv: string[]): string[] {
  return shell.kind === "ssh" && shell.sudo ? ["sudo", "-n", ...argv] : argv;
}

/** A step's own dependencies plus what every step on its host waits for. */
export function withAfter(dependsOn: pulumi.CustomResourceOptions["dependsOn"], after: pulumi.Resource[] | undefined): pulumi.CustomResourceOptions["dependsOn"] {
  if (!after?.length) return dependsOn;
  if (dependsOn === undefined) return after;
  if (Array.isArray(dependsOn)) return [...(dependsOn as pulumi.Input<pulumi.Resource>[]), ...after];
  if (pulumi.Resource.isInstance(dependsOn)) return [dependsOn, ...after];
  throw new Error("remoteStep: dependsOn must be a resource or a list of resources");
}

export function remoteStep(name: string, shell: HostShell, args: RemoteStepArgs, opts: pulumi.CustomResourceOptions): pulumi.CustomResource {
  const create = withTimeout(args.timeoutSeconds, asRoot(shell, args.argv));
  const common = {
    create,
    update: create,
    ...(args.deleteArgv ? { delete: withTimeout(args.timeoutSeconds, asRoot(shell, args.deleteArgv)) } : {}),
    ...(args.stdin !== undefined ? { stdin: args.stdin } : {}),
    ...(args.triggers ? { triggers: args.triggers } : {}),
    logging: args.secretOutput ? "none" : "stdoutAndStderr",
    // The previous run's stdout and stderr are not handed to the next run as
    // environment variables: sshd refuses variables it does not AcceptEnv
    // (the provider then warns on every update), and they could carry what
    // a command printed into a later one.
    addPreviousOutputInEnv: false,
  } as const;
  const timeouts = { create: `${args.timeoutSeconds + 60}s`, update: `${args.timeoutSeconds + 60}s`, delete: `${args.timeoutSeconds + 60}s` };
  const resourceOpts = { ...opts, dependsOn: withAfter(opts.dependsOn, shell.after), additionalSecretOutputs: args.secretOutput ? ["stdout", "stderr"] : [], customTimeouts: timeouts };
  return shell.kind === "ssh"
    ? new command.remote.Command(name, { connection: shell.connection, ...common }, resourceOpts)
    : new command.local.Command(name, common, resourceOpts);
}
