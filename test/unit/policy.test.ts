/**
 * The policy pack's checks (policy/checks.ts), each on resources that pass
 * and resources that fail, and the stack settings they read
 * (policy/settings.ts).
 */
import { describe, expect, it } from "vitest";
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import { parse } from "yaml";
import { Secret } from "@pulumi/policy";
import { checkDataProtection, checkFirewall, checkPinnedImages, checkPublishedPorts, findPlainSecrets, isWorld, TYPES, UNKNOWN_SENTINELS, type CheckedResource } from "../../policy/checks";
import { stackSettings } from "../../policy/settings";
import { DEFAULT_IMAGES, KEYS } from "../../lib/config";
import { policies, secretsPolicy } from "../../policy/policies";

const defaults = stackSettings({});
const res = (type: string, name: string, props: Record<string, unknown>, protect = false): CheckedResource => ({ type, name, props, opts: { protect } });
const container = (name: string, props: Record<string, unknown>) => res(TYPES.container, `${name}-container`, { name, ...props });

describe("stack settings", () => {
  it("are the program's defaults for a stack that sets nothing", () => {
    expect(defaults).toEqual({ deleteDataOnDestroy: false, balancerPorts: [KEYS.httpPort!.default, KEYS.httpsPort!.default], secretValues: [] });
  });
  it("read deleteDataOnDestroy and the balancer's ports as the program does", () => {
    const s = stackSettings({ "synaxic:deleteDataOnDestroy": "true", "synaxic:httpPort": "8081", "synaxic:httpsPort": "8443" });
    expect(s.deleteDataOnDestroy).toBe(true);
    expect(s.balancerPorts).toEqual([8081, 8443]);
    expect(stackSettings({ "synaxic:deleteDataOnDestroy": "false" }).deleteDataOnDestroy).toBe(false);
    // A value the program refuses: the safe default.
    expect(stackSettings({ "synaxic:deleteDataOnDestroy": "yes" }).deleteDataOnDestroy).toBe(false);
  });
  it("collect the values of the secret keys (the program's and providers' credentials), not of others", () => {
    const s = stackSettings({
      "synaxic:googleClientSecret": "GoogleSecretValue123",
      "synaxic:sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
      "hcloud:token": "HcloudTokenValue123",
      "synaxic:googleClientId": "client-id.apps.googleusercontent.com",
      "synaxic:httpsPrivateKey": "short",
    });
    expect(s.secretValues).toEqual(["GoogleSecretValue123", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----", "HcloudTokenValue123"]);
  });
});

describe("no-published-ports", () => {
  it("passes containers that publish nothing", () => {
    expect(checkPublishedPorts(container("synaxic-main-postgres", {}), defaults)).toEqual([]);
    expect(checkPublishedPorts(container("synaxic-main-postgres", { ports: [] }), defaults)).toEqual([]);
  });
  it("passes the balancer and a host anchor publishing the balancer's ports", () => {
    expect(checkPublishedPorts(container("synaxic-main-nginx", { ports: [{ internal: 80, external: 80 }, { internal: 443, external: 443 }] }), defaults)).toEqual([]);
    expect(checkPublishedPorts(container("synaxic-main-host", { ports: [{ internal: 80, external: 8080, ip: "127.0.0.1" }] }), defaults)).toEqual([]);
    expect(checkPublishedPorts(container("synaxic-main-nginx", { ports: [{ internal: 8081, external: 80 }] }), stackSettings({ "synaxic:httpPort": "8081" }))).toEqual([]);
  });
  it("refuses a private service publishing a port, naming the container and the fix", () => {
    const [m, ...rest] = checkPublishedPorts(container("synaxic-replica-1-redis", { ports: [{ internal: 6380, external: 6380 }] }), defaults);
    expect(rest).toEqual([]);
    expect(m).toContain('"synaxic-replica-1-redis"');
    expect(m).toContain("6380->6380");
    expect(m).toContain("Remove `ports`");
  });
  it("refuses the balancer or an anchor publishing another port", () => {
    expect(checkPublishedPorts(container("synaxic-main-nginx", { ports: [{ internal: 5432 }] }), defaults)[0]).toMatch(/\(random\)->5432.*not the balancer's port \(80, 443/);
    expect(checkPublishedPorts(container("synaxic-main-host", { ports: [{ internal: 80, external: 8080 }, { internal: 9090, external: 9090 }] }), defaults)[0]).toContain("9090->9090");
  });
  it("looks at containers only", () => {
    expect(checkPublishedPorts(res("docker:index/network:Network", "n", { ports: [{ internal: 1 }] }), defaults)).toEqual([]);
  });
});

describe("pinned-images", () => {
  const image = (name: string) => res(TYPES.remoteImage, "img", { name });
  it("passes version tags, digests and the program's default images", () => {
    for (const ok of [...Object.values(DEFAULT_IMAGES), KEYS.appImage!.default as string, "registry.example.com:5000/team/app:2.0.1", `app@sha256:${"a".repeat(64)}`, `app:1.0@sha256:${"b".repeat(64)}`]) {
      expect(checkPinnedImages(image(ok)), ok).toEqual([]);
    }
  });
  it("refuses latest and a missing tag, with lib/config.ts's reason", () => {
    expect(checkPinnedImages(image("postgres:latest"))[0]).toMatch(/"postgres:latest": the tag 'latest' is not pinned/);
    expect(checkPinnedImages(image("postgres"))[0]).toMatch(/"postgres": expected an image with a pinned tag/);
    expect(checkPinnedImages(image(`app@sha256:${"a".repeat(10)}`))).toHaveLength(1);
  });
  it("containers: an image ID passes, a name is checked like a RemoteImage's", () => {
    expect(checkPinnedImages(container("c", { image: `sha256:${"c".repeat(64)}` }))).toEqual([]);
    expect(checkPinnedImages(container("c", { image: "nginx:1.22.1" }))).toEqual([]);
    expect(checkPinnedImages(container("c", { image: "nginx:latest" }))[0]).toContain('"c-container" runs image "nginx:latest"');
    expect(checkPinnedImages(container("c", { image: "nginx" }))).toHaveLength(1);
  });
  it("skips an image not known yet (a preview before its RemoteImage exists)", () => {
    expect(checkPinnedImages(container("c", { image: UNKNOWN_SENTINELS[2] }))).toEqual([]);
  });
});

describe("firewall-world-only-balancer", () => {
  const WORLD = ["0.0.0.0/0", "::/0"];
  const fw = (...rules: Record<string, unknown>[]) => res(TYPES.firewall, "main-firewall", { name: "synaxic-main", rules });
  const ssh = { description: "SSH from the operators", direction: "in", protocol: "tcp", port: "22", sourceIps: ["198.51.100.0/24"] };
  it("knows the world", () => {
    expect(WORLD.every(isWorld)).toBe(true);
    expect(["0.0.0.0/1", "10.0.0.0/8", "198.51.100.7/32", "2001:db8::/32", "garbage"].some(isWorld)).toBe(false);
  });
  it("passes the balancer's ports to the world, SSH and private ports from named sources", () => {
    const rules = [ssh, { direction: "in", protocol: "tcp", port: "80", sourceIps: WORLD }, { direction: "in", protocol: "tcp", port: "443", sourceIps: WORLD }, { direction: "in", protocol: "tcp", port: "5432", sourceIps: ["10.10.0.3/32"] }];
    expect(checkFirewall(fw(...rules), defaults)).toEqual([]);
    expect(checkFirewall(fw({ direction: "in", protocol: "tcp", port: "8081", sourceIps: WORLD }), stackSettings({ "synaxic:httpPort": "8081" }))).toEqual([]);
    // Outbound rules name destinations, not sources.
    expect(checkFirewall(fw({ direction: "out", protocol: "tcp", port: "5432", destinationIps: WORLD }), defaults)).toEqual([]);
  });
  it("refuses a private port open to the world, naming the rule", () => {
    const [m] = checkFirewall(fw(ssh, { description: "PostgreSQL", direction: "in", protocol: "tcp", port: "5432", sourceIps: ["10.10.0.3/32", "::/0"] }), defaults);
    expect(m).toContain('rule 1 ("PostgreSQL") opens tcp port 5432 to ::/0');
    expect(m).toContain("Only the balancer's ports (80, 443, tcp)");
  });
  it("refuses SSH from the world, also through a range or every port", () => {
    for (const port of ["22", "20-25", undefined, "any"]) {
      const [m, ...rest] = checkFirewall(fw({ description: "SSH", direction: "in", protocol: "tcp", ...(port ? { port } : {}), sourceIps: ["0.0.0.0/0"] }), defaults);
      expect(rest).toEqual([]);
      expect(m, String(port)).toMatch(/opens SSH .* to 0\.0\.0\.0\/0.*adminCidrs/);
    }
  });
  it("refuses the world on a port range, another protocol or the balancer's port over udp", () => {
    expect(checkFirewall(fw({ direction: "in", protocol: "tcp", port: "80-90", sourceIps: WORLD }), defaults)).toHaveLength(1);
    expect(checkFirewall(fw({ direction: "in", protocol: "icmp", sourceIps: WORLD }), defaults)[0]).toContain("opens icmp every port");
    expect(checkFirewall(fw({ direction: "in", protocol: "udp", port: "443", sourceIps: WORLD }), defaults)).toHaveLength(1);
  });
});

describe("data-servers-protected", () => {
  const server = (props: Record<string, unknown>, protect: boolean) => res(TYPES.server, "main-server", { name: "synaxic-main", ...props }, protect);
  const guarded = { deleteProtection: true, rebuildProtection: true };
  it("passes a server with protect and Hetzner's delete and rebuild protection", () => {
    expect(checkDataProtection(server(guarded, true), defaults)).toEqual([]);
  });
  it("refuses a server missing any of them, naming what is missing and the opt-out", () => {
    expect(checkDataProtection(server(guarded, false), defaults)[0]).toMatch(/lacks the `protect: true` resource option\. Set it, or.*synaxic:deleteDataOnDestroy/);
    expect(checkDataProtection(server({ deleteProtection: false, rebuildProtection: true }, true), defaults)[0]).toContain("lacks `deleteProtection: true`.");
    expect(checkDataProtection(server({}, false), defaults)[0]).toContain("lacks the `protect: true` resource option, `deleteProtection: true`, `rebuildProtection: true`. Set them");
  });
  it("lets a stack that opts into deleting its data go unprotected", () => {
    expect(checkDataProtection(server({}, false), stackSettings({ "synaxic:deleteDataOnDestroy": "true" }))).toEqual([]);
  });
  it("looks at servers only", () => {
    expect(checkDataProtection(res("docker:index/volume:Volume", "postgres-data", { name: "synaxic-main-pgdata" }), defaults)).toEqual([]);
  });
});

describe("secrets-stay-secret", () => {
  const s = stackSettings({ "synaxic:googleClientSecret": "GoogleSecretValue123" });
  const PEM = "-----BEGIN PRIVATE KEY-----\nMIIabc\n-----END PRIVATE KEY-----\n";
  it("passes secrets that are secret, and plain inputs that carry none", () => {
    const app = container("synaxic-main-app", {
      envs: ["SERVER_PORT=8080", "REDIS_PASSWORD_FILE=/run/synaxic/redis-password", "GOOGLE_CLIENT_ID=client-id", new Secret("GOOGLE_CLIENT_SECRET=GoogleSecretValue123")],
      uploads: new Secret([{ file: "/etc/tls/server.key", content: PEM }]),
    });
    expect(findPlainSecrets(app, s)).toEqual([]);
    const cmd = res("command:remote:Command", "postgres-roles", {
      connection: { host: "203.0.113.10", user: "root", privateKey: new Secret(PEM) },
      stdin: new Secret("ALTER ROLE synaxic PASSWORD 'x'"),
      environment: { PGHOST: "127.0.0.1", PGPASSWORD: new Secret("pw") },
      create: "psql",
    });
    expect(findPlainSecrets(cmd, s)).toEqual([]);
    expect(findPlainSecrets(res(TYPES.server, "s", { userData: new Secret(PEM), deleteProtection: true }), s)).toEqual([]);
  });
  it("refuses a plain secret environment variable, naming the input but never its value", () => {
    const [m, ...rest] = findPlainSecrets(container("synaxic-main-app", { envs: ["SERVER_PORT=8080", "GOOGLE_CLIENT_SECRET=GoogleSecretValue123"] }), s);
    expect(rest).toEqual([]);
    expect(m).toContain("input envs[1] is not secret, but the environment variable GOOGLE_CLIENT_SECRET carries a secret and it holds the value of a secret configuration key");
    expect(m).not.toContain("GoogleSecretValue123");
    expect(findPlainSecrets(res("command:remote:Command", "c", { environment: { PGPASSWORD: "pw", PGHOST: "h" } }), defaults)[0]).toContain("input environment.PGPASSWORD");
  });
  it("refuses secret-bearing inputs by name (a command's private key, a provider's token)", () => {
    expect(findPlainSecrets(res("command:remote:Command", "c", { connection: { host: "h", privateKey: "key-material" } }), defaults)[0]).toContain("input connection.privateKey is not secret, but the input privateKey carries a secret");
    expect(findPlainSecrets(res("pulumi:providers:hcloud", "default", { token: "tok" }), defaults)).toHaveLength(1);
  });
  it("refuses secret content anywhere: private keys, SQL and Redis passwords, URL credentials, bcrypt hashes", () => {
    const plain = [
      { stdin: PEM },
      { stdin: "CREATE ROLE app LOGIN PASSWORD 'hunter2hunter2'" },
      { stdin: "port 0\nmasterauth s3cr3t\n" },
      { stdin: "user app on #abc >s3cr3t ~* +@all\n" },
      { create: "curl https://admin:pw@example.com/" },
      { stdin: "basic_auth_users:\n  prometheus: $2a$10$abcdefghijklmnopqrstuuqflPDzB6gcMhKa1rZqKiun2YGL5sa2u\n" },
    ];
    for (const props of plain) expect(findPlainSecrets(res("command:remote:Command", "c", props), defaults), JSON.stringify(props)).toHaveLength(1);
    expect(findPlainSecrets(container("c", { uploads: [{ file: "/etc/tls/server.key", content: PEM }] }), defaults)[0]).toContain("input uploads[0].content is not secret, but it holds a private key");
  });
  it("finds a secret configuration value inside a larger plain text", () => {
    expect(findPlainSecrets(res("command:remote:Command", "c", { stdin: "client-secret: GoogleSecretValue123\n" }), s)[0]).toContain("holds the value of a secret configuration key");
  });
  it("skips values not known yet and empty values", () => {
    expect(findPlainSecrets(container("c", { envs: ["DB_PASSWORD="], uploads: UNKNOWN_SENTINELS[3], stdin: UNKNOWN_SENTINELS[2] }), defaults)).toEqual([]);
  });
  it("uses the SDK's unknown placeholders", () => {
    const sdk = createRequire(__filename)("@pulumi/policy/proxy") as Record<string, string>;
    const names = ["unknownBooleanValue", "unknownNumberValue", "unknownStringValue", "unknownArrayValue", "unknownAssetValue", "unknownArchiveValue", "unknownObjectValue"];
    expect(names.map((n) => sdk[n])).toEqual(UNKNOWN_SENTINELS);
  });
});

describe("the pack", () => {
  it("has the five policies, mandatory except the secret check, which must run at remediate to see secrets", () => {
    expect(policies.map((p) => [p.name, p.enforcementLevel])).toEqual([
      ["no-published-ports", "mandatory"],
      ["pinned-images", "mandatory"],
      ["firewall-world-only-balancer", "mandatory"],
      ["data-servers-protected", "mandatory"],
      ["secrets-stay-secret", "remediate"],
    ]);
    expect(secretsPolicy.remediateResource).toBeTypeOf("function");
    for (const p of policies) expect(p.description.length, p.name).toBeGreaterThan(20);
  });

  it("runs in CI on every pull request's preview", () => {
    const wf = parse(readFileSync(".github/workflows/pulumi.yml", "utf8")) as { jobs: Record<string, { steps: { uses?: string; with?: Record<string, unknown> }[] }> };
    const preview = wf.jobs.preview!.steps.find((s) => s.uses?.startsWith("pulumi/actions@"))!;
    expect(preview.with!.command).toBe("preview");
    expect(preview.with!.policyPacks).toBe("${{ github.workspace }}/policy");
    expect(existsSync("policy/PulumiPolicy.yaml")).toBe(true);
    expect(parse(readFileSync("policy/PulumiPolicy.yaml", "utf8"))).toMatchObject({ runtime: "nodejs" });
  });
});
