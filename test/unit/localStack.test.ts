import { beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { findLeaks, type Recorded } from "./harness";
import { runLocal } from "./fixtures";
import { KEYS } from "../../lib/config";
import { standinAppSource } from "../../lib/standinApp";

const CONTAINER = "docker:index/container:Container";
let run: Awaited<ReturnType<typeof runLocal>>;

beforeAll(async () => {
  run = await runLocal(1);
}, 120_000);


describe("the local stack: main and a replica as two hosts on this machine's Docker engine", () => {
  it("needs no cloud and no SSH: the local engine, local commands only", () => {
    const types = new Set(run.resources.map((r) => r.type));
    expect([...types].filter((t) => t.startsWith("hcloud:"))).toEqual([]);
    expect(types).not.toContain("command:remote:Command");
    expect(types).toContain("command:local:Command");
    const providers = run.of("pulumi:providers:docker");
    expect(providers.map((p) => p.name)).toEqual(["local-engine"]);
    expect(providers[0]!.inputs.host).toBeUndefined();
  });

  it("each host is an anchor container on its own network and on the shared private network, with its private address", () => {
    const anchors = run.of(CONTAINER).filter((c) => c.name.endsWith("-anchor"));
    expect(anchors.map((a) => a.inputs.name).sort()).toEqual(["synaxic-main-host", "synaxic-replica-1-host"]);
    const nets = (a: Recorded) => (a.inputs.networksAdvanced as { name: string; ipv4Address?: string }[]).map((n) => `${n.name}${n.ipv4Address ? `@${n.ipv4Address}` : ""}`);
    expect(nets(run.one(CONTAINER, "main-anchor"))).toEqual(["synaxic-local-private@10.10.0.2", "synaxic-local-main"]);
    expect(nets(run.one(CONTAINER, "replica-1-anchor"))).toEqual(["synaxic-local-private@10.10.0.3", "synaxic-local-replica-1"]);
    expect(run.one("docker:index/network:Network", "private-network").inputs.ipamConfigs).toEqual([{ subnet: "10.10.0.0/16" }]);
    // Only the balancer is reachable from this machine, on loopback.
    expect(run.one(CONTAINER, "main-anchor").inputs.ports).toEqual([expect.objectContaining({ internal: 80, external: 8080, ip: "127.0.0.1" })]);
    expect(run.one(CONTAINER, "replica-1-anchor").inputs.ports ?? []).toEqual([]);
  });

  it("every service joins its own host's namespace; the components are the same as on a VPS", () => {
    const services = run.of(CONTAINER).filter((c) => !c.name.endsWith("-anchor"));
    expect(services.length).toBeGreaterThanOrEqual(14);
    for (const c of services) {
      const host = c.name.startsWith("replica-1-") ? "replica-1" : "main";
      // The anchor's container ID (the mocks' id for <host>-anchor), as Docker reports it back: a name would differ on every read.
      expect(c.inputs.networkMode, c.name).toBe(`container:${host}-anchor-id`);
      expect(String(c.inputs.name)).toMatch(new RegExp(`^synaxic-${host}-`));
    }
    const types = run.resources.map((r) => r.type);
    expect(types.filter((t) => t === "synaxic:components:PostgresReplica")).toHaveLength(1);
    expect(types.filter((t) => t === "synaxic:components:PostgresMaster")).toHaveLength(1);
  });

  it("Redis's users.acl is an upload into its container, not a host file: a local stack run by a user other than root cannot hand a host file to Redis's user", () => {
    for (const host of ["main", "replica-1"]) {
      const redis = run.of(CONTAINER).find((c) => c.inputs.name === `synaxic-${host}-redis`)!;
      const acl = (redis.inputs.uploads as { file: string; content: string }[]).find((u) => u.file === "/etc/synaxic/acl/users.acl");
      expect(acl?.content, host).toMatch(/^user synaxic reset on #[0-9a-f]{64} /m);
      expect(redis.inputs.mounts ?? [], host).toEqual([]);
      expect(run.resources.filter((r) => r.name.endsWith("redis-acl")).map((r) => r.name), host).toEqual([]);
    }
  });

  it("the replica streams from the main host's private address; main admits it", () => {
    const conf = String(run.one("command:local:Command", "replica-1-postgres-conf").inputs.stdin);
    expect(conf).toMatch(/primary_conninfo = '.*host=10\.10\.0\.2 /);
    expect(conf).toContain("primary_slot_name = 'synaxic_replica_1'");
    const hba = String(run.one("command:local:Command", "postgres-hba").inputs.stdin);
    expect(hba).toMatch(/^hostssl\s+replication\s+replicator\s+10\.10\.0\.3\/32\s+scram-sha-256$/m);
    expect(run.one("command:local:Command", "postgres-slot-replica-1").inputs.stdin).toContain("synaxic_replica_1");
    // One stack holds both: the replica's server starts only after the primary (its roles and slots).
    expect(run.one(CONTAINER, "replica-1-postgres-container").opts.dependsOn).toContain("postgres");
  });

  it("host files live in a project folder and are bind-mounted from there", () => {
    const hba = run.one("command:local:Command", "postgres-hba").inputs;
    expect(String(hba.create)).toMatch(/\.state\/hosts\/local\/main\/postgres-hba\/pg_hba\.conf/);
    const mounts = run.one(CONTAINER, "postgres-container").inputs.mounts as { source: string; target: string }[];
    expect(mounts[0]!.source).toMatch(/\.state\/hosts\/local\/main\/postgres-hba$/);
  });

  it("secrets stay secret", () => {
    const leaks = run.resources.flatMap((r) => findLeaks(r.raw, run.secretValues).map((p) => `${r.name}: ${p}`));
    expect(leaks).toEqual([]);
    expect(run.secretOutputs).toContain("replicaCredentials");
    expect(run.values.balancerUrl).toBe("http://127.0.0.1:8080");
  });
});

describe("the local stack's app: the stand-in built from standin-app/ unless the stack names an appImage", () => {
  let standin: Awaited<ReturnType<typeof runLocal>>;
  const source = standinAppSource();

  beforeAll(async () => {
    // What the CLI hands the program when Pulumi.local.yaml does not set appImage: Pulumi.yaml's default.
    standin = await runLocal(1, { "synaxic:appImage": String(KEYS.appImage!.default) });
  }, 120_000);

  it("declares one build of the stand-in's image on this machine, tagged and triggered by the digest of its sources", () => {
    const builds = standin.of("command:local:Command").filter((c) => c.name.startsWith("standin-app"));
    expect(builds.map((b) => b.name)).toEqual(["standin-app-image-build"]);
    const b = builds[0]!.inputs;
    expect(b.triggers).toEqual([source.digest]);
    expect(String(b.create)).toContain(`sh ${source.dir} ${source.tag} Dockerfile package.json package-lock.json server.mjs`);
    expect(String(b.create)).toContain("npm ci --prefix");
    expect(String(b.create)).toContain("docker build --network none --tag");
    expect(String(b.delete)).toContain(`docker image rm`);
    expect(String(b.delete)).toContain(source.tag);
    expect(standin.of("synaxic:components:StandinAppImage").map((c) => c.name)).toEqual(["standin-app"]);
  });

  it("both app containers run the built image's ID as is: no app image is pulled", () => {
    // What the harness's mocked build printed (test/unit/harness.ts: a "-image-build" command prints sha256:<digest of stack/name>).
    const id = `sha256:${createHash("sha256").update("local/standin-app-image-build").digest("hex").slice(0, 16)}`;
    for (const c of ["app-container", "replica-1-app-container"]) expect(standin.one(CONTAINER, c).inputs.image, c).toBe(id);
    const pulled = standin.of("docker:index/remoteImage:RemoteImage").map((r) => String(r.inputs.name));
    expect(pulled.filter((n) => n.includes("synaxic"))).toEqual([]);
    expect(pulled).not.toContain(String(KEYS.appImage!.default));
  });

  it("the fleet's appImage output is the stand-in's tag, not an image it never ran", () => {
    expect((standin.values.fleet as { appImage: string }).appImage).toBe(source.tag);
  });

  it("with an appImage of the stack's own, nothing is built and both apps pull it", () => {
    expect(run.of("synaxic:components:StandinAppImage")).toEqual([]);
    expect(run.of("command:local:Command").filter((c) => c.name.startsWith("standin-app"))).toEqual([]);
    const images = run.of("docker:index/remoteImage:RemoteImage").filter((r) => r.name.endsWith("app-image"));
    expect(images.map((r) => `${r.name}=${String(r.inputs.name)}`).sort()).toEqual(["app-image=registry.example.com/synaxic:1.4.2", "replica-1-app-image=registry.example.com/synaxic:1.4.2"]);
    expect(run.one(CONTAINER, "app-container").inputs.image).toMatch(/^sha256:/);
  });
});
