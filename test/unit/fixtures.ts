/** Stack configurations the Pulumi-layer tests run the program with. */
import { loadStackConfig, type MainConfig, type ReplicaConfig, type StackConfig } from "../../lib/config";
import { mainStack } from "../../stacks/main";
import { replicaStack } from "../../stacks/replica";
import { localStack } from "../../stacks/local";
import type { ControlInfo } from "../../lib/control";
import { runMocked, type RunOptions, type RunResult } from "./harness";

const P = "synaxic:";

export const SECRET_CONFIG = {
  [`${P}sshPrivateKey`]: "-----BEGIN OPENSSH PRIVATE KEY-----\nOperatorKeyMaterial0123456789\n-----END OPENSSH PRIVATE KEY-----\n",
  [`${P}googleClientSecret`]: "GoogleClientSecretValue0123",
};

export function replicaList(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `replica-${i + 1}=10.10.0.${3 + i}`);
}

export function mainConfig(replicas: number | string[], extra: Record<string, string> = {}): Record<string, string> {
  return {
    [`${P}role`]: "main",
    [`${P}adminCidrs`]: JSON.stringify(["198.51.100.0/24"]),
    [`${P}replicas`]: JSON.stringify(typeof replicas === "number" ? replicaList(replicas) : replicas),
    [`${P}appImage`]: "registry.example.com/synaxic:1.4.2",
    [`${P}googleClientId`]: "client-id.apps.googleusercontent.com",
    ...SECRET_CONFIG,
    ...extra,
  };
}

export function replicaConfig(name: string, privateIp: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    [`${P}role`]: "replica",
    [`${P}hostName`]: name,
    [`${P}privateIp`]: privateIp,
    [`${P}mainStack`]: "acme/synaxic/main",
    [`${P}adminCidrs`]: JSON.stringify(["198.51.100.0/24"]),
    [`${P}googleClientId`]: "client-id.apps.googleusercontent.com",
    ...SECRET_CONFIG,
    ...extra,
  };
}

export const SECRET_KEYS = Object.keys(SECRET_CONFIG);

/** The control stack host stacks name when a test gives a control state. */
export const CONTROL_STACK = "acme/synaxic/control";

/** A host stack's config and stack references under a control stack in this state (none: no control stack). */
function underControl(control: ControlInfo | undefined): { config: Record<string, string>; refs: NonNullable<RunOptions["stackReferences"]> } {
  return control ? { config: { [`${P}controlStack`]: CONTROL_STACK }, refs: { [CONTROL_STACK]: { outputs: { control }, secretOutputNames: [] } } } : { config: {}, refs: {} };
}

export function runMain(
  replicas: number | string[],
  extra: Record<string, string> = {},
  mocks: Pick<RunOptions, "appSlots"> & { control?: ControlInfo } = {},
): Promise<RunResult<Awaited<ReturnType<typeof mainStack>>>> {
  const { control, ...rest } = mocks;
  const under = underControl(control);
  const config = mainConfig(replicas, { ...under.config, ...extra });
  // The object storage's access key and the receivers' secrets are stored as secrets, as `pulumi config set --secret` does.
  const secretKeys = [...SECRET_KEYS, ...Object.keys(extra).filter((k) => /:(backup(AccessKeyId|SecretAccessKey|CipherPass)|alert(SmtpPassword|SlackWebhookUrl|WebhookUrl|HeartbeatUrl))$/.test(k))];
  // The stack's reference to itself (read only with passwordRotation set): a stack that has exported nothing yet.
  const self = { "organization/synaxic/main": { outputs: {}, secretOutputNames: [] } };
  return runMocked({ config, secretKeys, stack: "main", stackReferences: { ...self, ...under.refs }, ...rest }, () => mainStack(loadStackConfig() as MainConfig & StackConfig));
}

/** Runs the main program, then a replica program whose StackReference returns main's real outputs with their secretness. */
export async function runReplica(
  name: string,
  privateIp: string,
  opts: {
    replicas?: number | string[];
    extra?: Record<string, string>;
    mainExtra?: Record<string, string>;
    mutateMainOutputs?: (o: Record<string, unknown>) => void;
    /** The control stack's state this replica's stack reads (it names the control stack); main's outputs are those of main before any change. */
    control?: ControlInfo;
  } = {},
) {
  const main = await runMain(opts.replicas ?? 2, opts.mainExtra ?? {});
  const outputs = structuredClone(main.values);
  opts.mutateMainOutputs?.(outputs);
  const under = underControl(opts.control);
  const config = replicaConfig(name, privateIp, { ...under.config, ...opts.extra });
  const result = await runMocked(
    {
      config,
      secretKeys: SECRET_KEYS,
      stack: name,
      stackReferences: { "acme/synaxic/main": { outputs, secretOutputNames: [...main.secretOutputs] }, ...under.refs },
    },
    () => replicaStack(loadStackConfig() as ReplicaConfig & StackConfig),
  );
  return { main, replica: result };
}

export function runLocal(replicas: number | string[] = 1, extra: Record<string, string> = {}) {
  const config = mainConfig(replicas, { [`${P}hostProvider`]: "local", ...extra });
  delete config[`${P}sshPrivateKey`];
  const secretKeys = [...SECRET_KEYS.filter((k) => k !== `${P}sshPrivateKey`), ...Object.keys(extra).filter((k) => /:alert(SmtpPassword|SlackWebhookUrl|WebhookUrl|HeartbeatUrl)$/.test(k))];
  return runMocked({ config, secretKeys, stack: "local", stackReferences: { "organization/synaxic/local": { outputs: {}, secretOutputNames: [] } } }, () => localStack(loadStackConfig() as MainConfig & StackConfig));
}
