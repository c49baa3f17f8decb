/**
 * The policy pack started the way the Pulumi CLI's Node.js language host
 * starts one (`pulumi preview --policy-pack policy`): node runs the SDK's
 * run-policy-pack, resolved from the pack's folder (so from the project's
 * node_modules), with the engine's address and the pack's folder as
 * arguments, the pack's folder as working directory and the stack's
 * configuration in PULUMI_CONFIG. The pack prints its port and answers the
 * engine's gRPC calls; these tests make them.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const require_ = createRequire(__filename);
const grpc = require_("@grpc/grpc-js") as { credentials: { createInsecure(): unknown } };
const rpc = require_("@pulumi/pulumi/proto/analyzer_grpc_pb") as { AnalyzerClient: new (addr: string, creds: unknown) => Record<string, (req: unknown, cb: (err: unknown, resp: any) => void) => void> };
const pb = require_("@pulumi/pulumi/proto/analyzer_pb") as Record<string, any>;
const { Struct } = require_("google-protobuf/google/protobuf/struct_pb") as { Struct: { fromJavaScript(v: unknown): unknown } };
const { Empty } = require_("google-protobuf/google/protobuf/empty_pb") as { Empty: new () => unknown };

const POLICY_DIR = resolve("policy");
const SECRET = { "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270" };
const CONFIG = { "synaxic:httpPort": "8081", "synaxic:deleteDataOnDestroy": "true", "synaxic:googleClientSecret": "GoogleSecretValue123" };

let pack: ChildProcess;
let client: Record<string, (req: unknown, cb: (err: unknown, resp: any) => void) => void>;
let stderr = "";

beforeAll(async () => {
  const runPolicyPack = require_.resolve("@pulumi/pulumi/cmd/run-policy-pack", { paths: [POLICY_DIR] });
  pack = spawn(process.execPath, [runPolicyPack, "127.0.0.1:1", POLICY_DIR], {
    cwd: POLICY_DIR,
    env: { ...process.env, PULUMI_CONFIG: JSON.stringify(CONFIG), PULUMI_NODEJS_STACK: "main", PULUMI_NODEJS_PROJECT: "synaxic" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  pack.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<string>((resolvePort, reject) => {
    let out = "";
    pack.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const line = /^(\d+)\n/.exec(out);
      if (line) resolvePort(line[1]!);
    });
    pack.on("exit", (code) => reject(new Error(`the policy pack exited (${code}) before serving: ${stderr}`)));
  });
  client = new rpc.AnalyzerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}, 180_000);

afterAll(() => {
  pack?.kill();
});

const call = (method: string, req: unknown) => new Promise<any>((ok, fail) => client[method]!(req, (e, r) => (e ? fail(e) : ok(r))));

function request(type: string, name: string, props: Record<string, unknown>, protect = false) {
  const r = new pb.AnalyzeRequest();
  r.setType(type);
  r.setName(name);
  r.setUrn(`urn:pulumi:main::synaxic::${type}::${name}`);
  r.setProperties(Struct.fromJavaScript(props));
  const o = new pb.AnalyzerResourceOptions();
  o.setProtect(protect);
  r.setOptions(o);
  return r;
}

/** Remediation, then analysis, as the engine calls them for each resource. */
async function check(req: unknown): Promise<{ policy: string; message: string; level: number }[]> {
  const remediated = await call("remediate", req);
  expect(remediated.getRemediationsList()).toEqual([]);
  const analyzed = await call("analyze", req);
  return analyzed.getDiagnosticsList().map((d: any) => ({ policy: d.getPolicyname(), message: d.getMessage(), level: d.getEnforcementlevel() }));
}

describe("the policy pack as the CLI runs it", () => {
  it("serves the pack: its name, the version of policy/package.json, its policies", async () => {
    const info = await call("getAnalyzerInfo", new Empty());
    expect(info.getName()).toBe("synaxic-security");
    expect(info.getVersion()).toBe(require_("../../policy/package.json").version);
    expect(info.getPoliciesList().map((p: any) => p.getName())).toEqual(["no-published-ports", "pinned-images", "firewall-world-only-balancer", "data-servers-protected", "secrets-stay-secret"]);
  });

  it("reports a violation as mandatory", async () => {
    const vs = await check(request("docker:index/container:Container", "postgres-container", { name: "synaxic-main-postgres", image: "postgres:15.13-bookworm", ports: [{ internal: 5432, external: 5432 }] }));
    expect(vs.map((v) => [v.policy, v.level])).toEqual([["no-published-ports", pb.EnforcementLevel.MANDATORY]]);
    expect(vs[0]!.message).toContain("synaxic-main-postgres");
  });

  it("reads the stack's configuration: its balancer port and its deleteDataOnDestroy", async () => {
    expect(await check(request("docker:index/container:Container", "balancer-container", { name: "synaxic-main-nginx", image: "nginx:1.22.1", ports: [{ internal: 8081, external: 8081 }] }))).toEqual([]);
    expect(await check(request("hcloud:index/server:Server", "main-server", { name: "synaxic-main", deleteProtection: false }))).toEqual([]);
  });

  it("sees which inputs the engine sent as secrets", async () => {
    const envs = (google: unknown) => ({ name: "synaxic-main-app", image: `sha256:${"a".repeat(64)}`, envs: ["SERVER_PORT=8080", google] });
    expect(await check(request("docker:index/container:Container", "app-container", envs({ ...SECRET, value: "GOOGLE_CLIENT_SECRET=GoogleSecretValue123" })))).toEqual([]);
    const vs = await check(request("docker:index/container:Container", "app-container", envs("GOOGLE_CLIENT_SECRET=GoogleSecretValue123")));
    expect(vs.map((v) => [v.policy, v.level])).toEqual([["secrets-stay-secret", pb.EnforcementLevel.MANDATORY]]);
    expect(vs[0]!.message).toContain("input envs[1] is not secret");
  });

  it("skips values a preview does not know yet", async () => {
    expect(await check(request("docker:index/container:Container", "app-container", { name: "synaxic-main-app", image: "04da6b54-80e4-46f7-96ec-b56ff0331ba9" }))).toEqual([]);
  });

  // Last: it changes the running pack's configuration.
  it("takes a policy pack configuration that lowers a policy's level (the documented exception)", async () => {
    const req = new pb.ConfigureAnalyzerRequest();
    const config = new pb.PolicyConfig();
    config.setEnforcementlevel(pb.EnforcementLevel.ADVISORY);
    config.setProperties(Struct.fromJavaScript({}));
    req.getPolicyconfigMap().set("no-published-ports", config);
    await call("configure", req);
    const vs = await check(request("docker:index/container:Container", "postgres-container", { name: "synaxic-main-postgres", image: "postgres:15.13-bookworm", ports: [{ internal: 5432, external: 5432 }] }));
    expect(vs.map((v) => [v.policy, v.level])).toEqual([["no-published-ports", pb.EnforcementLevel.ADVISORY]]);
  });
});
