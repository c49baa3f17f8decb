/**
 * Runs the policy pack (policy/policies.ts) on the resources a mocked run of
 * the program declares, through the policy SDK's own request handling: each
 * resource becomes the engine's Analyze/Remediate request (its inputs as the
 * SDK sent them, secret markers included, and its protect option), handled
 * by the SDK's remediate and analyze functions in the order the engine
 * calls them (remediations first, then analysis).
 *
 * Also loads the example stacks (Pulumi.main.yaml, Pulumi.replica.yaml,
 * Pulumi.local.yaml) and runs the program on each under the mocks, with
 * test values in place of their encrypted entries.
 */
import * as pulumi from "@pulumi/pulumi";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { loadStackConfig, type MainConfig, type ReplicaConfig, type StackConfig } from "../../lib/config";
import { localStack } from "../../stacks/local";
import { mainStack } from "../../stacks/main";
import { replicaStack } from "../../stacks/replica";
import { PACK_NAME, policies } from "../../policy/policies";
import { runMocked, SECRET_SIG, type Recorded, type RunResult } from "./harness";
import { SECRET_CONFIG } from "./fixtures";

const require_ = createRequire(__filename);

interface Message {
  setType(v: string): void;
  setName(v: string): void;
  setUrn(v: string): void;
  setProperties(v: unknown): void;
  setOptions(v: unknown): void;
  setProtect(v: boolean): void;
  setParent(v: string): void;
}
interface Diagnostic {
  getPolicyname(): string;
  getMessage(): string;
  getEnforcementlevel(): number;
}
type Handler = (call: { request: unknown }, cb: (err: unknown, resp: { getDiagnosticsList(): Diagnostic[]; getRemediationsList(): unknown[] }) => void) => Promise<void>;

// The SDK's request handlers, as the policy pack's gRPC server uses them.
const server = require_("@pulumi/policy/server") as {
  makeAnalyzeRpcFun(name: string, version: string, level: string, policies: unknown[]): Handler;
  makeRemediateRpcFun(name: string, version: string, level: string, policies: unknown[]): Handler;
};
const proto = require_("@pulumi/pulumi/proto/analyzer_pb") as { AnalyzeRequest: new () => Message; AnalyzerResourceOptions: new () => Message; EnforcementLevel: Record<string, number> };
const { Struct } = require_("google-protobuf/google/protobuf/struct_pb") as { Struct: { fromJavaScript(v: unknown): unknown } };
const PACK_VERSION = (JSON.parse(readFileSync("policy/package.json", "utf8")) as { version: string }).version;

export const SECRET_MARKER = SECRET_SIG;

export interface Violation {
  policy: string;
  resource: string;
  type: string;
  message: string;
  level: "advisory" | "mandatory" | "remediate" | "disabled";
}

const LEVELS = Object.fromEntries(Object.entries(proto.EnforcementLevel).map(([k, v]) => [v, k.toLowerCase()])) as Record<number, Violation["level"]>;

/** The engine's URN for a recorded resource (its parent's type, when it has one, comes first). */
function urnOf(stack: string, r: Recorded, byName: Map<string, Recorded>): string {
  const parent = r.opts.parent ? byName.get(r.opts.parent) : undefined;
  return `urn:pulumi:${stack}::synaxic::${parent ? `${parent.type}$` : ""}${r.type}::${r.name}`;
}

function call(handler: Handler, request: unknown) {
  return new Promise<Parameters<Parameters<Handler>[1]>[1]>((resolve, reject) => {
    void handler({ request }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

/**
 * Runs every policy of the pack on each resource, remediation then analysis,
 * and returns what they report. The pack reads the stack's configuration as
 * the CLI hands it over: `config` is that stack's (keys like synaxic:httpPort).
 */
export async function runPack(stack: string, config: Record<string, string>, resources: Recorded[]): Promise<Violation[]> {
  pulumi.runtime.setAllConfig(config, []);
  const analyze = server.makeAnalyzeRpcFun(PACK_NAME, PACK_VERSION, "mandatory", policies);
  const remediate = server.makeRemediateRpcFun(PACK_NAME, PACK_VERSION, "mandatory", policies);
  const byName = new Map(resources.map((r) => [r.name, r]));
  const out: Violation[] = [];
  for (const r of resources) {
    const request = new proto.AnalyzeRequest();
    request.setType(r.type);
    request.setName(r.name);
    request.setUrn(urnOf(stack, r, byName));
    request.setProperties(Struct.fromJavaScript(JSON.parse(JSON.stringify(r.raw))));
    const options = new proto.AnalyzerResourceOptions();
    options.setProtect(r.opts.protect === true);
    request.setOptions(options);
    const remediated = await call(remediate, request);
    if (remediated.getRemediationsList().length) throw new Error(`the pack changed the inputs of ${r.name}; its policies only report`);
    const analyzed = await call(analyze, request);
    for (const d of analyzed.getDiagnosticsList()) {
      out.push({ policy: d.getPolicyname(), resource: r.name, type: r.type, message: d.getMessage(), level: LEVELS[d.getEnforcementlevel()]! });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// The example stacks
// ---------------------------------------------------------------------------

/** Test values for the example stacks' encrypted entries (and the local stack's placeholder Google secret). */
export const EXAMPLE_SECRETS: Record<string, string> = {
  ...SECRET_CONFIG,
  "hcloud:token": "HcloudApiTokenForTheMocks0123456789",
};

export type ExampleFile = "Pulumi.main.yaml" | "Pulumi.replica.yaml" | "Pulumi.local.yaml";

/** An example stack's configuration as `pulumi config` would hold it, secure entries replaced by test values. */
export function exampleConfig(file: ExampleFile, extra: Record<string, string> = {}): { config: Record<string, string>; secretKeys: string[] } {
  const stack = parse(readFileSync(file, "utf8")) as { config: Record<string, unknown> };
  const config: Record<string, string> = {};
  const secretKeys: string[] = [];
  for (const [k, v] of Object.entries(stack.config)) {
    if (v && typeof v === "object" && "secure" in (v as object)) {
      const value = EXAMPLE_SECRETS[k];
      if (value === undefined) throw new Error(`${file}: no test value for the secret ${k}`);
      config[k] = value;
      secretKeys.push(k);
    } else config[k] = typeof v === "string" ? v : JSON.stringify(v);
  }
  if (file === "Pulumi.local.yaml" && config["synaxic:googleClientSecret"] === undefined) {
    // `npm run up:local` stores a placeholder Google secret before `pulumi up`.
    config["synaxic:googleClientSecret"] = EXAMPLE_SECRETS["synaxic:googleClientSecret"]!;
    secretKeys.push("synaxic:googleClientSecret");
  }
  return { config: { ...config, ...extra }, secretKeys };
}

export interface ExampleRun {
  stack: string;
  config: Record<string, string>;
  run: RunResult<Record<string, unknown>>;
}

/** The stack name an example file is for (Pulumi.<stack>.yaml). */
function stackOf(file: ExampleFile): string {
  return file.replace(/^Pulumi\.|\.yaml$/g, "");
}

/**
 * Runs the program on an example stack as index.ts does (by role and host
 * provider). The replica example reads the main example's outputs through
 * its StackReference.
 */
export async function runExample(file: ExampleFile, extra: Record<string, string> = {}): Promise<ExampleRun> {
  if (exampleConfig(file, extra).config["synaxic:role"] !== "replica") return runExampleWith(file, extra, undefined);
  // A replica as it runs once set up: its first `up` publishes its certificate requests, main signs them, then the run checked here.
  // Where main reads it: its stack under the default name, from the replica's name.
  const replicaStackName = `organization/synaxic/${exampleConfig(file, extra).config["synaxic:hostName"]!}`;
  const main0 = await runExampleWith("Pulumi.main.yaml", {}, undefined);
  const first = await runExampleWith(file, extra, mainRefs(file, extra, main0));
  const main1 = await runExampleWith("Pulumi.main.yaml", {}, {
    "organization/synaxic/main": { outputs: structuredClone(main0.run.values), secretOutputNames: [] },
    [replicaStackName]: { outputs: structuredClone(first.run.values), secretOutputNames: [] },
  });
  // Its second `up` reads what its first published (its reference to itself).
  const self = { [`organization/synaxic/${stackOf(file)}`]: { outputs: structuredClone(first.run.values), secretOutputNames: [] } };
  return runExampleWith(file, extra, { ...mainRefs(file, extra, main1), ...self });
}

/** The main example's outputs as the replica example's StackReference reads them. */
function mainRefs(file: ExampleFile, extra: Record<string, string>, main: ExampleRun): NonNullable<Parameters<typeof runMocked>[0]["stackReferences"]> {
  const { config } = exampleConfig(file, extra);
  return { [config["synaxic:mainStack"]!]: { outputs: structuredClone(main.run.values), secretOutputNames: [...main.run.secretOutputs] } };
}

async function runExampleWith(file: ExampleFile, extra: Record<string, string>, stackReferences: Parameters<typeof runMocked>[0]["stackReferences"]): Promise<ExampleRun> {
  const { config, secretKeys } = exampleConfig(file, extra);
  const stack = stackOf(file);
  const run = await runMocked({ config, secretKeys, stack, ...(stackReferences ? { stackReferences } : {}) }, () => {
    const cfg = loadStackConfig();
    // The example stacks are main, replica and local stacks.
    const provider = (cfg as { host?: { provider?: string } }).host?.provider;
    const outputs = cfg.role === "replica" ? replicaStack(cfg as ReplicaConfig & StackConfig) : provider === "local" ? localStack(cfg as MainConfig & StackConfig) : mainStack(cfg as MainConfig & StackConfig);
    return outputs as unknown as Record<string, unknown>;
  });
  return { stack, config, run };
}
