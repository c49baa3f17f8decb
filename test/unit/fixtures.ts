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

/** The replica names a main configuration lists. */
function replicaNames(replicas: number | string[]): string[] {
  return (typeof replicas === "number" ? replicaList(replicas) : replicas).map((r) => r.split("=")[0]!);
}

export interface MainMocks extends Pick<RunOptions, "appSlots"> {
  control?: ControlInfo;
  /** Outputs of each replica's stack (organization/synaxic/<name>), by replica name; absent: a stack that exported nothing yet. */
  replicaOutputs?: Record<string, Record<string, unknown>>;
  /** The main stack's own outputs from its last `up` (its reference to itself); absent: a new stack. */
  previous?: Record<string, unknown>;
  /** Outputs of further stacks by full name (a replica's stack named in replicaStacks). */
  stacks?: Record<string, Record<string, unknown>>;
}

export function runMain(replicas: number | string[], extra: Record<string, string> = {}, mocks: MainMocks = {}): Promise<RunResult<Awaited<ReturnType<typeof mainStack>>>> {
  const { control, replicaOutputs, previous, stacks, ...rest } = mocks;
  const under = underControl(control);
  const config = mainConfig(replicas, { ...under.config, ...extra });
  // The object storage's access key and the receivers' secrets are stored as secrets, as `pulumi config set --secret` does.
  const secretKeys = [...SECRET_KEYS, ...Object.keys(extra).filter((k) => /:(backup(AccessKeyId|SecretAccessKey|CipherPass)|alert(SmtpPassword|SlackWebhookUrl|WebhookUrl|HeartbeatUrl))$/.test(k))];
  // The stack's reference to itself: as its last `up` left it (a new stack: nothing exported yet).
  const self = { "organization/synaxic/main": { outputs: previous ?? {}, secretOutputNames: [] } };
  // Each replica's stack, where main reads its certificate requests (replicaStacks' default names).
  const replicaRefs = Object.fromEntries(replicaNames(replicas).map((n) => [`organization/synaxic/${n}`, { outputs: replicaOutputs?.[n] ?? {}, secretOutputNames: [] }]));
  return runMocked({ config, secretKeys, stack: "main", stackReferences: { ...replicaRefs, ...Object.fromEntries(Object.entries(stacks ?? {}).map(([n, outputs]) => [n, { outputs, secretOutputNames: [] }])), ...self, ...under.refs }, ...rest }, () => mainStack(loadStackConfig() as MainConfig & StackConfig));
}

/** Main's outputs from a version before certificate requests, as far as readCertFlow reads them: every listed replica had its key made by main. */
export function legacyPrevious(replicas: number | string[]): Record<string, unknown> {
  return { fleet: { replicas: replicaNames(replicas).map((name) => ({ name })) } };
}

export interface ReplicaRunOptions {
  replicas?: number | string[];
  extra?: Record<string, string>;
  mainExtra?: Record<string, string>;
  mutateMainOutputs?: (o: Record<string, unknown>) => void;
  /** The control stack's state this replica's stack reads (it names the control stack); main's outputs are those of main before any change. */
  control?: ControlInfo;
  /**
   * Where the replica's certificates come from. own-keys (the default): a
   * new replica's whole order, its first `up` (pending), main's, its
   * second. legacy: a fleet upgraded from before certificate requests (main
   * made its key). pending: its first `up` against a main that has signed nothing.
   */
  flow?: "own-keys" | "legacy" | "pending";
}

/** Runs a replica program against main's outputs (with their secretness), as its StackReference reads them. */
export function runReplicaAgainst(
  main: RunResult<Record<string, unknown>>,
  name: string,
  privateIp: string,
  opts: Pick<ReplicaRunOptions, "extra" | "mutateMainOutputs" | "control"> & {
    /** The replica stack's own outputs from its last `up` (its reference to itself); absent: a new stack. */
    previous?: Record<string, unknown>;
  } = {},
) {
  const outputs = structuredClone(main.values);
  opts.mutateMainOutputs?.(outputs);
  const under = underControl(opts.control);
  const config = replicaConfig(name, privateIp, { ...under.config, ...opts.extra });
  return runMocked(
    {
      config,
      secretKeys: SECRET_KEYS,
      stack: name,
      stackReferences: {
        "acme/synaxic/main": { outputs, secretOutputNames: [...main.secretOutputs] },
        [`organization/synaxic/${name}`]: { outputs: opts.previous ?? {}, secretOutputNames: [] },
        ...under.refs,
      },
    },
    () => replicaStack(loadStackConfig() as ReplicaConfig & StackConfig),
  );
}

/** Runs the main program, then a replica program whose StackReference returns main's real outputs with their secretness (see flow). */
export async function runReplica(name: string, privateIp: string, opts: ReplicaRunOptions = {}) {
  const replicas = opts.replicas ?? 2;
  const flow = opts.flow ?? "own-keys";
  const first = await runMain(replicas, opts.mainExtra ?? {}, flow === "legacy" ? { previous: legacyPrevious(replicas) } : {});
  if (flow !== "own-keys") return { main: first, replica: await runReplicaAgainst(first, name, privateIp, opts) };
  const pending = await runReplicaAgainst(first, name, privateIp, { ...opts, mutateMainOutputs: undefined });
  const main = await runMain(replicas, opts.mainExtra ?? {}, { previous: first.values, replicaOutputs: { [name]: pending.values } });
  return { main, replica: await runReplicaAgainst(main, name, privateIp, { ...opts, previous: pending.values }), pending };
}

export function runLocal(replicas: number | string[] = 1, extra: Record<string, string> = {}) {
  const config = mainConfig(replicas, { [`${P}hostProvider`]: "local", ...extra });
  delete config[`${P}sshPrivateKey`];
  const secretKeys = [...SECRET_KEYS.filter((k) => k !== `${P}sshPrivateKey`), ...Object.keys(extra).filter((k) => /:alert(SmtpPassword|SlackWebhookUrl|WebhookUrl|HeartbeatUrl)$/.test(k))];
  return runMocked({ config, secretKeys, stack: "local", stackReferences: { "organization/synaxic/local": { outputs: {}, secretOutputNames: [] } } }, () => localStack(loadStackConfig() as MainConfig & StackConfig));
}
