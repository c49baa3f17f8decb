/**
 * The whole policy pack, through the policy SDK's request handling, on what
 * the program declares for the example stacks (Pulumi.main.yaml,
 * Pulumi.replica.yaml, Pulumi.local.yaml) under the mocks: no violation.
 * Then each policy on a weakened copy of those resources, as a pull request
 * that weakens the checklist would declare them: the violation, naming the
 * resource.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { runExample, runPack, SECRET_MARKER, type ExampleFile, type ExampleRun, type Violation } from "./policyHarness";
import type { Recorded } from "./harness";

const CONTAINER = "docker:index/container:Container";
const EXAMPLES: ExampleFile[] = ["Pulumi.main.yaml", "Pulumi.replica.yaml", "Pulumi.local.yaml"];
const runs = {} as Record<ExampleFile, ExampleRun>;

beforeAll(async () => {
  for (const f of EXAMPLES) runs[f] = await runExample(f);
}, 180_000);

/** A copy of an example's resources with one of them changed. */
function weakened(f: ExampleFile, pick: (r: Recorded) => boolean, change: (r: Recorded) => void): { resources: Recorded[]; changed: Recorded } {
  const resources = structuredClone(runs[f].run.resources);
  const matches = resources.filter(pick);
  if (matches.length === 0) throw new Error(`${f}: no resource to weaken`);
  change(matches[0]!);
  return { resources, changed: matches[0]! };
}

const packOn = (f: ExampleFile, resources: Recorded[], config: Record<string, string> = runs[f].config) => runPack(runs[f].stack, config, resources);
const byPolicy = (vs: Violation[], policy: string) => vs.filter((v) => v.policy === policy);

/** Takes a secret input out of its secret marker (a plain input as a careless change would pass it). */
function unwrap(v: unknown): unknown {
  return v && typeof v === "object" && (v as Record<string, unknown>)[SECRET_MARKER] ? (v as { value: unknown }).value : v;
}

describe.each(EXAMPLES)("the example stack %s", (f) => {
  it("declares what the pack checks", () => {
    const types = new Set(runs[f].run.resources.map((r) => r.type));
    for (const t of [CONTAINER, "docker:index/remoteImage:RemoteImage"]) expect(types, t).toContain(t);
    if (f !== "Pulumi.local.yaml") for (const t of ["hcloud:index/firewall:Firewall", "hcloud:index/server:Server", "command:remote:Command"]) expect(types, t).toContain(t);
  });

  it("passes every policy of the pack: no violation, no diagnostic at all", async () => {
    expect(await packOn(f, runs[f].run.resources)).toEqual([]);
  });
});

describe("weakened stacks fail, naming the resource", () => {
  it("no-published-ports: a private service publishing a port", async () => {
    const { resources, changed } = weakened("Pulumi.main.yaml", (r) => r.type === CONTAINER && String(r.inputs.name).endsWith("-postgres"), (r) => {
      r.raw.ports = [{ internal: 5432, external: 5432 }];
    });
    const vs = await packOn("Pulumi.main.yaml", resources);
    expect(vs.map((v) => [v.policy, v.resource, v.level])).toEqual([["no-published-ports", changed.name, "mandatory"]]);
    expect(vs[0]!.message).toContain('"synaxic-main-postgres"');
  });

  it("no-published-ports: the local stack's anchor publishing more than the balancer", async () => {
    const { resources, changed } = weakened("Pulumi.local.yaml", (r) => r.type === CONTAINER && (r.raw.ports as unknown[] | undefined)?.length === 1, (r) => {
      (r.raw.ports as unknown[]).push({ internal: 5432, external: 15432, ip: "127.0.0.1" });
    });
    const vs = await packOn("Pulumi.local.yaml", resources);
    expect(vs.map((v) => [v.policy, v.resource])).toEqual([["no-published-ports", changed.name]]);
    expect(vs[0]!.message).toContain("127.0.0.1:15432->5432");
  });

  it("pinned-images: latest, and no tag", async () => {
    for (const image of ["postgres:latest", "postgres"]) {
      const { resources, changed } = weakened("Pulumi.replica.yaml", (r) => r.type === "docker:index/remoteImage:RemoteImage" && String(r.inputs.name).startsWith("postgres:"), (r) => {
        r.raw.name = image;
      });
      const vs = await packOn("Pulumi.replica.yaml", resources);
      expect(vs.map((v) => [v.policy, v.resource, v.level])).toEqual([["pinned-images", changed.name, "mandatory"]]);
      expect(vs[0]!.message).toContain(JSON.stringify(image));
    }
  });

  it("firewall-world-only-balancer: a private port open to the world, SSH open to the world", async () => {
    const { resources, changed } = weakened("Pulumi.main.yaml", (r) => r.type === "hcloud:index/firewall:Firewall", (r) => {
      const rules = r.raw.rules as { port: string; sourceIps: string[] }[];
      rules.find((x) => x.port === "22")!.sourceIps = ["0.0.0.0/0"];
      rules.find((x) => x.port === "5432")!.sourceIps.push("::/0");
    });
    const vs = await packOn("Pulumi.main.yaml", resources);
    expect(vs.map((v) => [v.policy, v.resource])).toEqual([
      ["firewall-world-only-balancer", changed.name],
      ["firewall-world-only-balancer", changed.name],
    ]);
    expect(vs[0]!.message).toContain("opens SSH");
    expect(vs[1]!.message).toContain("port 5432 to ::/0");
  });

  it("data-servers-protected: a server without protect, or without Hetzner's delete protection", async () => {
    for (const change of [(r: Recorded) => (r.opts.protect = false), (r: Recorded) => (r.raw.deleteProtection = false)]) {
      const { resources, changed } = weakened("Pulumi.replica.yaml", (r) => r.type === "hcloud:index/server:Server", change);
      const vs = await packOn("Pulumi.replica.yaml", resources);
      expect(vs.map((v) => [v.policy, v.resource, v.level])).toEqual([["data-servers-protected", changed.name, "mandatory"]]);
    }
  });

  it("data-servers-protected: a stack that sets deleteDataOnDestroy runs unprotected servers and passes", async () => {
    const deleting = await runExample("Pulumi.main.yaml", { "synaxic:deleteDataOnDestroy": "true" });
    expect(deleting.run.of("hcloud:index/server:Server").map((s) => s.opts.protect)).toEqual([false]);
    expect(await runPack(deleting.stack, deleting.config, deleting.run.resources)).toEqual([]);
    // The same resources under a stack that does not opt in.
    const vs = await runPack(deleting.stack, runs["Pulumi.main.yaml"].config, deleting.run.resources);
    expect(vs.map((v) => v.policy)).toEqual(["data-servers-protected"]);
  });

  it("secrets-stay-secret: a password on stdin, a private key in a connection, the Google secret in an env entry", async () => {
    const cases: [ExampleFile, (r: Recorded) => boolean, (r: Recorded) => void, string][] = [
      ["Pulumi.main.yaml", (r) => r.name === "postgres-roles", (r) => (r.raw.stdin = unwrap(r.raw.stdin)), "input stdin is not secret, but it holds an SQL password"],
      ["Pulumi.replica.yaml", (r) => r.type === "command:remote:Command", (r) => {
        const conn = unwrap(r.raw.connection) as Record<string, unknown>;
        r.raw.connection = { ...conn, privateKey: unwrap(conn.privateKey) };
      }, "input connection.privateKey is not secret, but the input privateKey carries a secret and it holds a private key and it holds the value of a secret configuration key"],
      ["Pulumi.local.yaml", (r) => r.type === CONTAINER && String(r.inputs.name) === "synaxic-main-app-a", (r) => {
        const uploads = unwrap(r.raw.uploads) as { file: string; content: unknown }[];
        const google = uploads.find((u) => u.file.endsWith("/GOOGLE_CLIENT_SECRET"))!;
        (r.raw.envs as unknown[]).push(`GOOGLE_CLIENT_SECRET=${String(unwrap(google.content)).trim()}`);
      }, "the environment variable GOOGLE_CLIENT_SECRET carries a secret and it holds the value of a secret configuration key"],
    ];
    for (const [f, pick, change, expected] of cases) {
      const { resources, changed } = weakened(f, pick, change);
      const vs = await packOn(f, resources);
      expect(vs.map((v) => [v.policy, v.resource, v.level]), f).toEqual([["secrets-stay-secret", changed.name, "mandatory"]]);
      expect(vs[0]!.message).toContain(expected);
      for (const secret of Object.values(runs[f].config).filter((v) => v.length >= 8 && runs[f].run.secretValues.includes(v))) expect(vs[0]!.message).not.toContain(secret);
    }
  });

  it("every policy's violation is mandatory: a weakened stack's preview fails", async () => {
    const { resources } = weakened("Pulumi.main.yaml", (r) => r.type === "docker:index/remoteImage:RemoteImage", (r) => {
      r.raw.name = "nginx";
    });
    const vs = byPolicy(await packOn("Pulumi.main.yaml", resources), "pinned-images");
    expect(vs.map((v) => v.level)).toEqual(["mandatory"]);
  });
});
