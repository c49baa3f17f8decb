/**
 * Remote commands: every one runs a fixed argv (built with the quoting helper,
 * never holding a secret) under `timeout`, with any payload, secret or not, on
 * standard input.
 */
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { sh } from "./shell";

export type Connection = command.types.input.remote.ConnectionArgs;

export interface RemoteStepArgs {
  connection: pulumi.Input<Connection>;
  /** What runs on create and update. */
  argv: string[];
  /** Fed to argv on standard input (a script, SQL, a file's content). */
  stdin?: pulumi.Input<string>;
  /** What runs when the resource is deleted. */
  deleteArgv?: string[];
  /** Re-run when any of these change. */
  triggers?: pulumi.Input<unknown>[];
  timeoutSeconds: number;
  /** stdout/stderr may carry something secret: keep them encrypted in state. */
  secretOutput?: boolean;
  environment?: Record<string, pulumi.Input<string>>;
}

/** Wraps argv so that it is killed after `seconds` (and SIGKILLed 10 s later). */
export function withTimeout(seconds: number, argv: string[]): string {
  return sh(["timeout", "--kill-after=10", String(seconds), ...argv]);
}

export function remoteStep(name: string, args: RemoteStepArgs, opts: pulumi.CustomResourceOptions): command.remote.Command {
  const create = withTimeout(args.timeoutSeconds, args.argv);
  return new command.remote.Command(
    name,
    {
      connection: args.connection,
      create,
      update: create,
      ...(args.deleteArgv ? { delete: withTimeout(args.timeoutSeconds, args.deleteArgv) } : {}),
      ...(args.stdin !== undefined ? { stdin: args.stdin } : {}),
      ...(args.triggers ? { triggers: args.triggers } : {}),
      ...(args.environment ? { environment: args.environment } : {}),
      logging: args.secretOutput ? "none" : "stdoutAndStderr",
    },
    {
      ...opts,
      additionalSecretOutputs: args.secretOutput ? ["stdout", "stderr"] : [],
      customTimeouts: { create: `${args.timeoutSeconds + 60}s`, update: `${args.timeoutSeconds + 60}s`, delete: `${args.timeoutSeconds + 60}s` },
    },
  );
}
