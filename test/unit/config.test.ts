import { beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { DEFAULT_PUBLIC_PATHS } from "../../templates/nginx";
import { REDIS_BACKUP_PACKAGES_DEFAULT } from "../../templates/redis-backup-image";
import { makeCa, type TestCa } from "../rig/pki";
import { KEYS, parseStackConfig, slotNameFor, type MainConfig, type ReplicaConfig, type ParsedConfig } from "../../lib/config";

const P = "synaxic:";
const SECRET_KEYS = new Set([`${P}sshPrivateKey`, `${P}googleClientSecret`]);

function mainRaw(extra: Record<string, string> = {}): Record<string, string> {
  return {
    [`${P}role`]: "main",
    [`${P}sshPrivateKey`]: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----",
    [`${P}googleClientId`]: "client-id.apps.googleusercontent.com",
    [`${P}googleClientSecret`]: "google-secret",
    [`${P}replicas`]: JSON.stringify(["replica-1=10.10.0.3", "replica-2=10.10.0.4"]),
    [`${P}appImage`]: "registry.example.com/synaxic:1.4.2",
    [`${P}adminCidrs`]: JSON.stringify(["198.51.100.0/24"]),
    ...extra,
  };
}

function replicaRaw(extra: Record<string, string> = {}): Record<string, string> {
  return {
    [`${P}role`]: "replica",
    [`${P}hostName`]: "replica-1",
    [`${P}privateIp`]: "10.10.0.3",
    [`${P}mainStack`]: "acme/synaxic/main",
    [`${P}adminCidrs`]: JSON.stringify(["198.51.100.0/24"]),
    [`${P}sshPrivateKey`]: "key",
    [`${P}googleClientId`]: "client-id",
    [`${P}googleClientSecret`]: "google-secret",
    ...extra,
  };
}

const parseMain = (extra: Record<string, string> = {}, secrets = SECRET_KEYS) => parseStackConfig(mainRaw(extra), secrets) as MainConfig;

describe("parseStackConfig: a valid main stack", () => {
  it("returns typed values with defaults applied", () => {
    const c = parseMain();
    expect(c.role).toBe("main");
    expect(c.replicas).toEqual([
      { name: "replica-1", privateIp: "10.10.0.3", slotName: "synaxic_replica_1" },
      { name: "replica-2", privateIp: "10.10.0.4", slotName: "synaxic_replica_2" },
    ]);
    // Size and zone come from Hetzner's catalogue later (lib/hetzner.ts).
    expect(c.host).toEqual({ provider: "hetzner", serverType: "cx33", location: "nbg1", osImage: "debian-12", networkZone: "", cpus: 0, memoryMiB: 0 });
    expect(c.ports.postgres).toBe(5432);
    expect(c.ports.redis).toBe(6380);
    expect(c.images.postgres).toMatch(/^postgres:17\./);
    expect(c.deleteDataOnDestroy).toBe(false);
  });

  it("takes an existing host with its pinned key and size", () => {
    const c = parseMain({
      [`${P}hostProvider`]: "existing",
      [`${P}sshHost`]: "203.0.113.10",
      [`${P}sshHostKey`]: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOb7 root@main",
      [`${P}cpus`]: "8",
      [`${P}memoryMiB`]: "32768",
    });
    expect(c.host).toMatchObject({ provider: "existing", sshHost: "203.0.113.10", sshPort: 22, sshUser: "root", cpus: 8, memoryMiB: 32768 });
  });

  it("slot names are valid PostgreSQL slot names and differ per replica", () => {
    expect(slotNameFor("replica-1")).toMatch(/^[a-z0-9_]+$/);
    expect(slotNameFor("replica-1")).not.toBe(slotNameFor("replica-2"));
  });
});

describe("parseStackConfig: bad input names the key, the value and the expected form", () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ["malformed replica address", { [`${P}replicas`]: JSON.stringify(["replica-1=10.10.0.300"]) }, /synaxic:replicas\[0\]: got address "10\.10\.0\.300"; expected an IPv4 address/],
    ["replica entry without '='", { [`${P}replicas`]: JSON.stringify(["replica-1 10.10.0.3"]) }, /replicas\[0\]: got "replica-1 10\.10\.0\.3"; expected "name=private IPv4 address"/],
    ["duplicate replica address", { [`${P}replicas`]: JSON.stringify(["a1=10.10.0.3", "b2=10.10.0.3"]) }, /replicas\[1\]: duplicate address "10\.10\.0\.3" \(also replicas\[0\]\)/],
    ["replica address equal to main's", { [`${P}replicas`]: JSON.stringify(["a1=10.10.0.2"]) }, /replicas\[0\]: got address "10\.10\.0\.2"; that is the main host's privateIp/],
    ["replica address outside the private network", { [`${P}replicas`]: JSON.stringify(["a1=192.0.2.4"]) }, /replicas\[0\]: got address "192\.0\.2\.4"; expected an address inside the private network 10\.10\.0\.0\/16/],
    ["duplicate replica name", { [`${P}replicas`]: JSON.stringify(["replica-1=10.10.0.3", "replica-1=10.10.0.4"]) }, /replicas\[1\]: duplicate replica name "replica-1"/],
    ["bad replica name", { [`${P}replicas`]: JSON.stringify(["Replica_1=10.10.0.3"]) }, /replicas\[0\]: got name "Replica_1"; expected a lower-case name/],
    ["replicas not a list", { [`${P}replicas`]: "replica-1=10.10.0.3" }, /synaxic:replicas: got "replica-1=10\.10\.0\.3"; expected a list/],
    ["malformed private address", { [`${P}privateIp`]: "10.10.0" }, /synaxic:privateIp: got "10\.10\.0"; expected an IPv4 address/],
    ["malformed server type", { [`${P}serverType`]: "CX 33" }, /synaxic:serverType: got "CX 33"; expected a Hetzner server type name/],
    ["malformed location", { [`${P}location`]: "nuremberg" }, /synaxic:location: got "nuremberg"; expected a Hetzner location name/],
    ["Hetzner without adminCidrs", { [`${P}adminCidrs`]: "[]" }, /synaxic:adminCidrs: is empty; a Hetzner server's firewall would then close SSH to everyone, including this program .*CI runners/],
    ["public private network", { [`${P}privateNetworkCidr`]: "203.0.113.0/24", [`${P}privateIp`]: "203.0.113.2" }, /synaxic:privateNetworkCidr: got "203\.0\.113\.0\/24"; expected a private range inside 10\.0\.0\.0\/8, 172\.16\.0\.0\/12, 192\.168\.0\.0\/16/],
    ["private network wider than a private range", { [`${P}privateNetworkCidr`]: "10.0.0.0/7" }, /synaxic:privateNetworkCidr: got "10\.0\.0\.0\/7"; expected a private range/],
    ["HTTP on SSH's port", { [`${P}httpPort`]: "22" }, /synaxic:httpPort: got 22; that is SSH's port and the balancer's ports are open to the world/],
    ["a service on SSH's port", { [`${P}grafanaPort`]: "22" }, /synaxic:grafanaPort: got 22; that is SSH's port/],
    ["WAL size PostgreSQL refuses", { [`${P}maxSlotWalKeepSize`]: "3000TB" }, /synaxic:maxSlotWalKeepSize: got "3000TB"; expected at most 2147483647MB/],
    ["wal_keep_size PostgreSQL refuses", { [`${P}walKeepSize`]: "2048TB" }, /synaxic:walKeepSize: got "2048TB"; expected at most 2147483647MB/],
    ...["public", "postgres", "all", "template1", "replication", "replicator", "synaxic_exporter", "pg_app"].map(
      (db): [string, Record<string, string>, RegExp] => [`database named ${db}`, { [`${P}databaseName`]: db }, new RegExp(`synaxic:databaseName: got "${db}"; expected a name of your own`)],
    ),
    ["image tagged latest", { [`${P}appImage`]: "registry.example.com/synaxic:latest" }, /synaxic:appImage: got "registry\.example\.com\/synaxic:latest"; the tag 'latest' is not pinned/],
    ["pgbackrestVersion that is not a package version", { [`${P}pgbackrestVersion`]: "2.59; curl evil" }, /synaxic:pgbackrestVersion: got "2\.59; curl evil"; expected a Debian package version as apt names it/],
    ["image without a tag", { [`${P}postgresImage`]: "postgres" }, /synaxic:postgresImage: got "postgres"; expected an image with a pinned tag/],
    ["port clash", { [`${P}grafanaPort`]: "9090" }, /synaxic:grafanaPort: got 9090; it clashes with prometheusPort/],
    ["port out of range", { [`${P}httpPort`]: "70000" }, /synaxic:httpPort: got "70000"; expected a TCP port from 1 to 65535/],
    ["unknown key", { [`${P}replicaCount`]: "3" }, /synaxic:replicaCount: unknown key/],
    ["no Google client id on a host stack", { [`${P}googleClientId`]: "" }, /synaxic:googleClientId: missing; set it with `pulumi config set googleClientId/],
    ["bad role", { [`${P}role`]: "primary" }, /synaxic:role: got "primary"; expected main, replica or control/],
    ["HTTPS certificate without its key", { [`${P}httpsCertificate`]: "-----BEGIN CERTIFICATE-----\nx" }, /synaxic:httpsPrivateKey: HTTPS needs both/],
    ["bad WAL size", { [`${P}maxSlotWalKeepSize`]: "lots" }, /synaxic:maxSlotWalKeepSize: got "lots"; expected a PostgreSQL size/],
  ];
  for (const [what, extra, message] of cases) {
    it(what, () => {
      expect(() => parseMain(extra)).toThrow(message);
    });
  }

  it("missing required secret", () => {
    const raw = mainRaw();
    delete raw[`${P}googleClientSecret`];
    expect(() => parseStackConfig(raw, SECRET_KEYS)).toThrow(/synaxic:googleClientSecret: missing required secret; set it with `pulumi config set --secret googleClientSecret/);
  });

  it("a local stack needs no SSH key, and must be a main stack", () => {
    const raw = mainRaw({ [`${P}hostProvider`]: "local" });
    delete raw[`${P}sshPrivateKey`];
    // mainRaw names an appImage of its own: the real app runs.
    expect((parseStackConfig(raw, SECRET_KEYS) as ParsedConfig).host).toEqual({ provider: "local", cpus: 2, memoryMiB: 4096, standinApp: false });
    expect(() => parseStackConfig({ ...replicaRaw(), [`${P}hostProvider`]: "local" }, SECRET_KEYS)).toThrow(/synaxic:hostProvider: got "local" on a replica stack/);
  });

  it("a local stack whose appImage is left at its default runs the stand-in app; the CLI passes that default when the stack does not set the key", () => {
    const raw = mainRaw({ [`${P}hostProvider`]: "local" });
    delete raw[`${P}sshPrivateKey`];
    const unset = { ...raw };
    delete unset[`${P}appImage`];
    const asDefault = { ...raw, [`${P}appImage`]: String(KEYS.appImage!.default) };
    for (const r of [unset, asDefault]) {
      const host = (parseStackConfig(r, SECRET_KEYS) as ParsedConfig).host;
      expect(host.provider === "local" && host.standinApp).toBe(true);
    }
  });

  it("a VPS stack without its SSH key", () => {
    const raw = mainRaw();
    delete raw[`${P}sshPrivateKey`];
    expect(() => parseStackConfig(raw, SECRET_KEYS)).toThrow(/synaxic:sshPrivateKey: missing required secret/);
  });

  it("a secret stored in plain text", () => {
    expect(() => parseStackConfig(mainRaw(), new Set([`${P}googleClientSecret`]))).toThrow(/synaxic:sshPrivateKey: is stored in plain text/);
  });

  it("an optional secret stored in plain text", () => {
    expect(() =>
      parseMain({ [`${P}httpsCertificate`]: "-----BEGIN CERTIFICATE-----\nx", [`${P}httpsPrivateKey`]: "-----BEGIN PRIVATE KEY-----" }),
    ).toThrow(/synaxic:httpsPrivateKey: is stored in plain text/);
  });

  it("missing required value", () => {
    const raw = mainRaw();
    delete raw[`${P}googleClientId`];
    expect(() => parseStackConfig(raw, SECRET_KEYS)).toThrow(/synaxic:googleClientId: missing/);
  });

  it("existing host without a pinned host key", () => {
    expect(() =>
      parseMain({ [`${P}hostProvider`]: "existing", [`${P}sshHost`]: "203.0.113.10", [`${P}cpus`]: "2", [`${P}memoryMiB`]: "4096" }),
    ).toThrow(/synaxic:sshHostKey: got ""; expected the host's public SSH key/);
  });

  it("an existing host's RSA host key is refused (its SHA-1 signatures no current sshd accepts); ed25519 and ECDSA are taken", () => {
    const existing = { [`${P}hostProvider`]: "existing", [`${P}sshHost`]: "203.0.113.10", [`${P}cpus`]: "2", [`${P}memoryMiB`]: "4096" };
    expect(() => parseMain({ ...existing, [`${P}sshHostKey`]: "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ root@main" })).toThrow(
      /synaxic:sshHostKey: got an ssh-rsa key; .*Pin the host's ed25519 key instead/,
    );
    for (const key of ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOb7", "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY="]) {
      expect(parseMain({ ...existing, [`${P}sshHostKey`]: key }).host).toMatchObject({ sshHostKey: key });
    }
  });

  it("an existing host may leave adminCidrs empty (its own firewall rules are the operator's)", () => {
    const c = parseMain({ [`${P}adminCidrs`]: "[]", [`${P}hostProvider`]: "existing", [`${P}sshHost`]: "203.0.113.10", [`${P}sshHostKey`]: "ssh-ed25519 AAAA", [`${P}cpus`]: "2", [`${P}memoryMiB`]: "4096" });
    expect(c.adminCidrs).toEqual([]);
  });

  it("the reserved database names include the fleet's own roles", async () => {
    const { PG_ROLES } = await import("../../lib/postgresContainer");
    const { RESERVED_DATABASE_NAMES } = await import("../../lib/config");
    for (const role of Object.values(PG_ROLES)) expect(RESERVED_DATABASE_NAMES).toContain(role);
  });

  it("Docker client settings in the environment that would redirect the provider are refused, by name", async () => {
    const { checkDockerEnvironment } = await import("../../lib/config");
    expect(() => checkDockerEnvironment({ DOCKER_CONTEXT: "desktop-linux" })).toThrow(/DOCKER_CONTEXT is set in this environment: .*Unset it \(`unset DOCKER_CONTEXT`\)/);
    expect(() => checkDockerEnvironment({ DOCKER_CERT_PATH: "/certs", DOCKER_KEY_MATERIAL: "k" })).toThrow(/DOCKER_CERT_PATH, DOCKER_KEY_MATERIAL are set/);
    // The program sets host and ssh_opts itself, so these cannot win; TLS_VERIFY is read by nothing in the provider.
    expect(() => checkDockerEnvironment({ DOCKER_HOST: "unix:///run/user/1000/docker.sock", DOCKER_TLS_VERIFY: "1", DOCKER_SSH_OPTS: "-v", DOCKER_CONTEXT: "" })).not.toThrow();
  });

  it("existing host without its size", () => {
    expect(() =>
      parseMain({ [`${P}hostProvider`]: "existing", [`${P}sshHost`]: "main.example.com", [`${P}sshHostKey`]: "ssh-ed25519 AAAA" }),
    ).toThrow(/synaxic:cpus: missing/);
  });
});

describe("parseStackConfig: what the balancer serves (balancerPublicPaths, balancerServerNames)", () => {
  const tlsSecrets = new Set([...SECRET_KEYS, `${P}httpsPrivateKey`]);
  let ca: TestCa;
  beforeAll(() => {
    ca = makeCa("config-test-ca");
  });
  const withCert = (sans: string[], extra: Record<string, string> = {}) => {
    const cert = ca.issue(`c${sans.length}-${Math.random().toString(36).slice(2, 6)}`, sans);
    return parseMain({ [`${P}httpsCertificate`]: cert.certPem, [`${P}httpsPrivateKey`]: cert.keyPem, ...extra }, tlsSecrets);
  };

  it("defaults to the app's public routes and any Host on an HTTP-only fleet", () => {
    expect(parseMain().balancerAccess).toEqual({ publicPaths: [...DEFAULT_PUBLIC_PATHS], serverNames: [] });
  });

  it("takes the operator's paths and names", () => {
    const c = parseMain({ [`${P}balancerPublicPaths`]: JSON.stringify(["/v1/", "/actuator/health"]), [`${P}balancerServerNames`]: JSON.stringify(["api.example.com", "*.example.com", "203.0.113.7"]) });
    expect(c.balancerAccess).toEqual({ publicPaths: ["/v1/", "/actuator/health"], serverNames: ["api.example.com", "*.example.com", "203.0.113.7"] });
  });

  it("with HTTPS and no names set, serves the names and IPv4 addresses the certificate is valid for", () => {
    expect(withCert(["api.example.com", "*.example.com", "203.0.113.7", "2001:db8::1"]).balancerAccess.serverNames).toEqual(["api.example.com", "*.example.com", "203.0.113.7"]);
    // Names set by the operator win over the certificate's.
    expect(withCert(["api.example.com"], { [`${P}balancerServerNames`]: JSON.stringify(["www.example.com"]) }).balancerAccess.serverNames).toEqual(["www.example.com"]);
  });

  it("refuses a certificate it cannot read, and one that names no host", () => {
    expect(() => parseMain({ [`${P}httpsCertificate`]: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n", [`${P}httpsPrivateKey`]: "k" }, tlsSecrets)).toThrow(
      /synaxic:httpsCertificate: is not a certificate nginx could load/,
    );
    expect(() => withCert(["2001:db8::1"])).toThrow(/synaxic:balancerServerNames: is empty and httpsCertificate names no host/);
  });

  it.each([
    [`${P}balancerPublicPaths`, ["v1/"], /synaxic:balancerPublicPaths.*"v1\/" must start with "\/"/],
    [`${P}balancerPublicPaths`, ["/v1/;x"], /synaxic:balancerPublicPaths.*expected paths such as/],
    [`${P}balancerPublicPaths`, ["/actuator/"], /synaxic:balancerPublicPaths.*opens a prefix under the actuator/],
    [`${P}balancerServerNames`, ["bad host"], /synaxic:balancerServerNames.*expected host names such as "api\.example\.com"/],
    [`${P}balancerServerNames`, ["_"], /synaxic:balancerServerNames.*expected host names/],
  ])("refuses %s %j", (key, value, error) => {
    expect(() => parseMain({ [key]: JSON.stringify(value) })).toThrow(error);
  });
});

describe("parseStackConfig: replica stacks", () => {
  it("returns the replica's settings", () => {
    const c = parseStackConfig(replicaRaw({ [`${P}reinitGeneration`]: "2" }), SECRET_KEYS) as ReplicaConfig;
    expect(c).toMatchObject({ role: "replica", replicaName: "replica-1", mainStack: "acme/synaxic/main", promote: false, followPrimary: "", rejoin: false, reinitGeneration: 2, privateIp: "10.10.0.3" });
  });
  it("a replica named main", () => {
    expect(() => parseStackConfig(replicaRaw({ [`${P}hostName`]: "main" }), SECRET_KEYS)).toThrow(/synaxic:hostName: got "main" on a replica stack/);
  });
  it("a replica without its main stack", () => {
    expect(() => parseStackConfig(replicaRaw({ [`${P}mainStack`]: "" }), SECRET_KEYS)).toThrow(/synaxic:mainStack: got ""; a replica stack needs the main stack's name/);
  });
  it("a negative re-initialisation generation", () => {
    expect(() => parseStackConfig(replicaRaw({ [`${P}reinitGeneration`]: "-1" }), SECRET_KEYS)).toThrow(/synaxic:reinitGeneration: got "-1"/);
  });
});

describe("Pulumi.yaml declares exactly the keys the program reads", () => {
  const project = parse(readFileSync("Pulumi.yaml", "utf8")) as { config: Record<string, { type?: string; default?: unknown; secret?: boolean; description?: string }> };
  it("same key set", () => {
    expect(Object.keys(project.config).sort()).toEqual(Object.keys(KEYS).sort());
  });
  for (const [key, spec] of Object.entries(KEYS)) {
    it(`${key}: type, description, default and secret agree`, () => {
      const decl = project.config[key]!;
      expect(decl.description, `${key} needs a description`).toBeTruthy();
      // The project file's config types (pulumi sdk/go/common/workspace/project.json, SimpleConfigType).
      expect(decl.type).toMatch(/^(string|integer|boolean|array|object)$/);
      if (decl.type === "object") expect(spec.json && !Array.isArray(spec.default), `${key}: an object key is read as JSON`).toBe(true);
      if (spec.secret) {
        expect(decl.secret).toBe(true);
        expect(decl.default).toBeUndefined();
      } else {
        expect(decl.secret ?? false).toBe(false);
        expect(decl.default).toEqual(spec.default);
      }
    });
  }
});

describe("with every declared default present, as the engine hands them to the program", () => {
  const project = parse(readFileSync("Pulumi.yaml", "utf8")) as { config: Record<string, { default?: unknown }> };
  const defaults = Object.fromEntries(
    Object.entries(project.config)
      .filter(([, d]) => d.default !== undefined)
      .map(([k, d]) => [`${P}${k}`, typeof d.default === "string" ? d.default : JSON.stringify(d.default)]),
  );
  it("a control stack parses (host keys at their defaults are not taken as set), and a host key set away from its default is refused", () => {
    const raw = { ...defaults, [`${P}role`]: "control" };
    expect(parseStackConfig(raw, new Set()).role).toBe("control");
    expect(() => parseStackConfig({ ...raw, [`${P}appPort`]: "8081" }, new Set())).toThrow(/synaxic:appPort: is for host stacks/);
  });
  it("a main stack parses with every alerting default: Alertmanager runs, no receiver is configured", () => {
    const c = parseStackConfig({ ...defaults, ...mainRaw() }, SECRET_KEYS) as MainConfig;
    expect(c.alerting).toEqual({ image: "prom/alertmanager:v0.33.1", port: 9093 });
  });
  it("monitoringReplica and alertmanagerClusterPort at their defaults: no second monitoring pair, on a main and on a replica stack", () => {
    const c = parseStackConfig({ ...defaults, ...mainRaw() }, SECRET_KEYS) as MainConfig;
    expect(c.alerting.pair).toBeUndefined();
    expect(parseStackConfig({ ...defaults, ...replicaRaw() }, SECRET_KEYS).role).toBe("replica");
    // Set: a pair on the default gossip port.
    const paired = parseStackConfig({ ...defaults, ...mainRaw({ [`${P}monitoringReplica`]: "replica-1" }) }, SECRET_KEYS) as MainConfig;
    expect(paired.alerting.pair).toEqual({ replica: "replica-1", clusterPort: 9094 });
    expect(() => parseStackConfig({ ...defaults, ...replicaRaw({ [`${P}monitoringReplica`]: "replica-1" }) }, SECRET_KEYS)).toThrow(/synaxic:monitoringReplica: is for the main stack/);
  });
  it("a host stack under a control stack parses; its own promote set is refused", () => {
    const raw = { ...defaults, ...mainRaw({ [`${P}controlStack`]: "acme/synaxic/control" }) };
    expect(parseStackConfig(raw, SECRET_KEYS).role).toBe("main");
    expect(() => parseStackConfig({ ...raw, [`${P}promote`]: "true" }, SECRET_KEYS)).toThrow(/synaxic:promote: is set on a stack whose primary is decided/);
    expect(() => parseStackConfig({ ...raw, [`${P}primary`]: "replica-1" }, SECRET_KEYS)).toThrow(/synaxic:primary: is for the control stack/);
  });
  it("without a control stack promote, followPrimary and rejoin are refused, naming the key and how to create one; at their defaults they pass", () => {
    for (const [k, v] of [["promote", "true"], ["followPrimary", "replica-2"], ["rejoin", "true"]]) {
      for (const raw of [mainRaw({ [`${P}${k}`]: v }), replicaRaw({ [`${P}${k}`]: v })]) {
        expect(() => parseStackConfig({ ...defaults, ...raw }, SECRET_KEYS)).toThrow(
          new RegExp(`^synaxic:${k}: is no longer read: .*\\\`pulumi stack init <org>/control\\\`, \\\`pulumi config set role control\\\`, \\\`pulumi up -s <org>/control\\\`.*\\\`pulumi config set controlStack <org>/synaxic/control\\\` on every host stack, remove this key \\(\\\`pulumi config rm ${k}\\\`\\)`),
        );
      }
    }
    expect((parseStackConfig({ ...defaults, ...mainRaw() }, SECRET_KEYS) as MainConfig).promote).toBe(false);
  });
  it("synchronousReplication: off by default; any1 needs a replica; main's key only", () => {
    expect((parseStackConfig({ ...defaults, ...mainRaw() }, SECRET_KEYS) as MainConfig).synchronousReplication).toBe("off");
    expect((parseStackConfig({ ...defaults, ...mainRaw({ [`${P}synchronousReplication`]: "any1" }) }, SECRET_KEYS) as MainConfig).synchronousReplication).toBe("any1");
    expect(() => parseStackConfig({ ...defaults, ...mainRaw({ [`${P}synchronousReplication`]: "first1" }) }, SECRET_KEYS)).toThrow(/^synaxic:synchronousReplication: got "first1"; expected off \(asynchronous\) or any1/);
    expect(() => parseStackConfig({ ...defaults, ...mainRaw({ [`${P}replicas`]: "[]", [`${P}synchronousReplication`]: "any1" }) }, SECRET_KEYS)).toThrow(/^synaxic:synchronousReplication: got "any1" with no replicas: every commit would wait/);
    expect(() => parseStackConfig({ ...defaults, ...replicaRaw({ [`${P}synchronousReplication`]: "any1" }) }, SECRET_KEYS)).toThrow(/^synaxic:synchronousReplication: is for the main stack/);
  });
});

describe("alerting keys (main stack)", () => {
  const ALERT_SECRETS = new Set([...SECRET_KEYS, `${P}alertSmtpPassword`, `${P}alertSlackWebhookUrl`, `${P}alertWebhookUrl`, `${P}alertHeartbeatUrl`]);
  const email = {
    [`${P}alertEmailTo`]: JSON.stringify(["ops@example.com", "oncall@example.com"]),
    [`${P}alertEmailFrom`]: "alerts@example.com",
    [`${P}alertSmtpSmarthost`]: "smtp.example.com:587",
    [`${P}alertSmtpUsername`]: "alerts",
    [`${P}alertSmtpPassword`]: "pw",
  };
  const urls = {
    [`${P}alertSlackWebhookUrl`]: "https://hooks.slack.com/services/T/B/x",
    [`${P}alertWebhookUrl`]: "http://10.10.0.9:8080/hook",
    [`${P}alertHeartbeatUrl`]: "https://hc-ping.com/uuid",
  };
  const alerting = (extra: Record<string, string>, secrets = ALERT_SECRETS) => parseMain(extra, secrets).alerting;

  it("with none set: Alertmanager with its pinned image on loopback port 9093, no receiver", () => {
    expect(alerting({})).toEqual({ image: "prom/alertmanager:v0.33.1", port: 9093 });
  });

  it("every receiver, with its defaults", () => {
    expect(alerting({ ...email, ...urls })).toEqual({
      image: "prom/alertmanager:v0.33.1",
      port: 9093,
      email: { smarthost: "smtp.example.com:587", from: "alerts@example.com", to: ["ops@example.com", "oncall@example.com"], username: "alerts", requireTls: true, minSeverity: "critical" },
      slack: { channel: "", minSeverity: "warning" },
      webhook: { minSeverity: "warning" },
      heartbeat: { interval: "1m" },
    });
    const custom = alerting({ ...email, ...urls, [`${P}alertEmailMinSeverity`]: "warning", [`${P}alertSlackChannel`]: "#ops", [`${P}alertSlackMinSeverity`]: "critical", [`${P}alertHeartbeatInterval`]: "30s", [`${P}alertSmtpRequireTls`]: "false" });
    expect(custom.email).toMatchObject({ minSeverity: "warning", requireTls: false });
    expect(custom.slack).toEqual({ channel: "#ops", minSeverity: "critical" });
    expect(custom.heartbeat).toEqual({ interval: "30s" });
  });

  it("email without authentication needs no password", () => {
    const plain: Record<string, string> = { ...email };
    delete plain[`${P}alertSmtpUsername`];
    delete plain[`${P}alertSmtpPassword`];
    expect(alerting(plain).email).toMatchObject({ username: "" });
  });

  it.each([
    ["a recipient that is not an address", { ...email, [`${P}alertEmailTo`]: JSON.stringify(["ops"]) }, /synaxic:alertEmailTo\[0\]: got "ops"; expected plain email addresses/],
    ["recipients without a sender", { ...email, [`${P}alertEmailFrom`]: "" }, /synaxic:alertEmailFrom: missing; alertEmailTo is set/],
    ["recipients without a server", { ...email, [`${P}alertSmtpSmarthost`]: "" }, /synaxic:alertSmtpSmarthost: missing/],
    ["a server without a port", { ...email, [`${P}alertSmtpSmarthost`]: "smtp.example.com" }, /synaxic:alertSmtpSmarthost: got "smtp.example.com"; expected host:port/],
    ["a user without a password", { ...email, [`${P}alertSmtpPassword`]: "" }, /synaxic:alertSmtpPassword: SMTP authentication needs both/],
    ["a sender without recipients", { [`${P}alertEmailFrom`]: "alerts@example.com" }, /synaxic:alertEmailFrom: is set but alertEmailTo is empty/],
    ["an unknown severity", { ...email, [`${P}alertEmailMinSeverity`]: "info" }, /synaxic:alertEmailMinSeverity: got "info"; expected critical/],
    ["a Slack URL over http", { [`${P}alertSlackWebhookUrl`]: "http://hooks.slack.com/services/x" }, /synaxic:alertSlackWebhookUrl: expected an https:\/\/ URL \(the value is a secret and not shown here\)/],
    ["a webhook that is not a URL", { [`${P}alertWebhookUrl`]: "hook-token-123" }, /synaxic:alertWebhookUrl: expected an http\(s\):\/\/ URL/],
    ["a Slack channel without the webhook", { [`${P}alertSlackChannel`]: "#ops" }, /synaxic:alertSlackChannel: is set but alertSlackWebhookUrl is not/],
    ["a Slack channel without # or @", { ...urls, [`${P}alertSlackChannel`]: "ops" }, /synaxic:alertSlackChannel: got "ops"; expected a channel such as #ops/],
    ["a heartbeat interval of 1s", { ...urls, [`${P}alertHeartbeatInterval`]: "1s" }, /synaxic:alertHeartbeatInterval: got "1s"; expected at least 2s/],
    ["a heartbeat interval without a unit", { ...urls, [`${P}alertHeartbeatInterval`]: "60" }, /synaxic:alertHeartbeatInterval: got "60"; expected a duration/],
    ["an unpinned Alertmanager image", { [`${P}alertmanagerImage`]: "prom/alertmanager:latest" }, /synaxic:alertmanagerImage: got "prom\/alertmanager:latest"; the tag 'latest' is not pinned/],
    ["Alertmanager on Prometheus' port", { [`${P}alertmanagerPort`]: "9090" }, /synaxic:alertmanagerPort: got 9090; it clashes with prometheusPort/],
    ["a monitoring replica that is not a replica", { [`${P}monitoringReplica`]: "replica-9" }, /synaxic:monitoringReplica: got "replica-9"; expected one of this stack's replicas \(replica-1, replica-2\), or empty/],
    ["the main host as monitoring replica", { [`${P}monitoringReplica`]: "main" }, /synaxic:monitoringReplica: got "main"; expected one of this stack's replicas/],
    ["a monitoring replica name with capitals", { [`${P}monitoringReplica`]: "Replica-1" }, /synaxic:monitoringReplica: got "Replica-1"/],
    ["the gossip port on Alertmanager's", { [`${P}alertmanagerClusterPort`]: "9093" }, /synaxic:alertmanagerClusterPort: got 9093; it clashes with alertmanagerPort/],
    ["the gossip port on the node exporter's", { [`${P}alertmanagerClusterPort`]: "9100" }, /synaxic:alertmanagerClusterPort: got 9100; it clashes with nodeExporterPort/],
    ["a gossip port out of range", { [`${P}alertmanagerClusterPort`]: "70000" }, /synaxic:alertmanagerClusterPort: got "70000"/],
    [
      "a heartbeat of 30s with a monitoring replica (both Alertmanagers would send it)",
      { ...urls, [`${P}monitoringReplica`]: "replica-1", [`${P}alertHeartbeatInterval`]: "30s" },
      /synaxic:alertHeartbeatInterval: got "30s"; with monitoringReplica set, the two Alertmanagers would both send the Watchdog: expected more than 30s \(twice their peer timeout, 15s\)/,
    ],
  ] as [string, Record<string, string>, RegExp][])("refuses %s", (_, extra, message) => {
    expect(() => parseMain(extra, ALERT_SECRETS)).toThrow(message);
  });

  it("monitoringReplica: a replica of this stack, clustered on alertmanagerClusterPort; a heartbeat above twice the peer timeout", () => {
    expect(alerting({ [`${P}monitoringReplica`]: "replica-2" }).pair).toEqual({ replica: "replica-2", clusterPort: 9094 });
    expect(alerting({ [`${P}monitoringReplica`]: "replica-1", [`${P}alertmanagerClusterPort`]: "9300" }).pair).toEqual({ replica: "replica-1", clusterPort: 9300 });
    expect(alerting({ ...urls, [`${P}monitoringReplica`]: "replica-1", [`${P}alertHeartbeatInterval`]: "31s" }).heartbeat).toEqual({ interval: "31s" });
    // Alone, a 30s heartbeat is fine.
    expect(alerting({ ...urls, [`${P}alertHeartbeatInterval`]: "30s" }).heartbeat).toEqual({ interval: "30s" });
    expect(alerting({}).pair).toBeUndefined();
  });

  it("refuses a secret URL or password stored in plain text, and never shows a URL's value in an error", () => {
    expect(() => parseMain({ ...email })).toThrow(/synaxic:alertSmtpPassword: is stored in plain text/);
    expect(() => parseMain({ [`${P}alertHeartbeatUrl`]: "https://hc-ping.com/uuid" })).toThrow(/synaxic:alertHeartbeatUrl: is stored in plain text/);
    let message = "";
    try {
      parseMain({ [`${P}alertWebhookUrl`]: "ftp://user:hunter2@example.com/" }, ALERT_SECRETS);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/alertWebhookUrl/);
    expect(message).not.toContain("hunter2");
  });
});

describe("the example stacks parse", () => {
  for (const file of ["Pulumi.main.yaml", "Pulumi.replica.yaml", "Pulumi.local.yaml", "Pulumi.control.yaml"]) {
    it(file, () => {
      const stack = parse(readFileSync(file, "utf8")) as { config: Record<string, unknown> };
      const raw: Record<string, string> = {};
      const secrets = new Set<string>();
      for (const [k, v] of Object.entries(stack.config)) {
        if (v && typeof v === "object" && "secure" in (v as object)) {
          raw[k] = "decrypted";
          secrets.add(k);
        } else raw[k] = typeof v === "string" ? v : JSON.stringify(v);
      }
      if (file === "Pulumi.local.yaml") {
        // `npm run up:local` stores a placeholder Google secret before `pulumi up`.
        expect(readFileSync("scripts/up-local.sh", "utf8")).toContain("pulumi config set --secret googleClientSecret");
        raw["synaxic:googleClientSecret"] = "placeholder";
        secrets.add("synaxic:googleClientSecret");
      }
      expect(() => parseStackConfig(raw, secrets)).not.toThrow();
      const c = parseStackConfig(raw, secrets);
      expect(c.role).toBe(file.includes("replica") ? "replica" : file.includes("control") ? "control" : "main");
    });
  }
});

describe("the configuration reference (docs/configuration.md) matches Pulumi.yaml", () => {
  const project = parse(readFileSync("Pulumi.yaml", "utf8")) as { config: Record<string, { type: string; default?: unknown; secret?: boolean }> };
  const readme = readFileSync("docs/configuration.md", "utf8");
  const section = readme.slice(readme.indexOf("| key | type | default | description |"));
  const lines = section.split("\n").slice(2);
  const rows = lines
    .slice(0, lines.findIndex((l) => !l.startsWith("|")))
    .filter((l) => l.startsWith("| `"))
    .map((l) => l.split(" | ").map((c) => c.replace(/^\| /, "").trim()));
  const documented = new Map(rows.map((r) => [r[0]!.replace(/`/g, ""), r]));

  it("documents every declared key, and no other", () => {
    expect([...documented.keys()].sort()).toEqual(Object.keys(project.config).sort());
  });
  for (const [key, decl] of Object.entries(project.config)) {
    it(`${key}: type and default as declared`, () => {
      const row = documented.get(key)!;
      expect(row[1]).toMatch(new RegExp(`^${decl.type}`));
      if (decl.secret) expect(row[2]).toContain("secret");
      else if (decl.default === undefined) expect(row[2]).toContain("required");
      else expect(row[2]).toBe(`\`${JSON.stringify(decl.default)}\``);
    });
  }
});

describe("backups: backupRepository with its access key, all or nothing", () => {
  const repo = { endpoint: "fsn1.your-objectstorage.com", bucket: "acme-synaxic", region: "fsn1" };
  const keys = { [`${P}backupAccessKeyId`]: "AKIAEXAMPLE", [`${P}backupSecretAccessKey`]: "s3-secret-access-key" };
  const secretKeys = new Set([...SECRET_KEYS, `${P}backupAccessKeyId`, `${P}backupSecretAccessKey`]);

  it("off by default, also with every declared default present", () => {
    expect(parseMain().backup).toBeNull();
    expect(parseMain({ [`${P}backupRepository`]: "{}", [`${P}backupAccessKeyId`]: "", [`${P}backupSecretAccessKey`]: "" }).backup).toBeNull();
  });

  it("on: the repository with its defaults, and the schedule", () => {
    const c = parseMain({ [`${P}backupRepository`]: JSON.stringify(repo), ...keys }, secretKeys);
    expect(c.backup).toEqual({
      repository: { ...repo, path: "/synaxic", retentionFull: 2, retentionDiff: 6 },
      schedule: { fullWeekday: 0, hourUtc: 3, verifyWeekday: 3 },
      // auto: from the first replica's standby.
      standby: "replica-1",
      // The weekly restore drill, on by default.
      drill: { weekday: 6, hourUtc: 5, timeoutMinutes: 120 },
      // Daily Redis snapshots, on by default (test/unit/redisSnapshots.test.ts).
      redis: { hourUtc: 2, retention: 7, packages: REDIS_BACKUP_PACKAGES_DEFAULT },
    });
    expect(parseMain({ [`${P}backupRepository`]: JSON.stringify(repo), ...keys, [`${P}replicas`]: "[]" }, secretKeys).backup!.standby).toBeNull();
    expect(parseMain({ [`${P}backupRepository`]: JSON.stringify(repo), ...keys, [`${P}backupFrom`]: "primary" }, secretKeys).backup!.standby).toBeNull();
    expect(parseMain({ [`${P}backupRepository`]: JSON.stringify(repo), ...keys, [`${P}backupFrom`]: "replica-2" }, secretKeys).backup!.standby).toBe("replica-2");
    expect(() => parseMain({ [`${P}backupRepository`]: JSON.stringify(repo), ...keys, [`${P}backupFrom`]: "replica-9" }, secretKeys)).toThrow(/synaxic:backupFrom: got "replica-9"; expected auto, primary, or one of this stack's replicas \(replica-1, replica-2\)/);
  });

  it.each([
    ["the key without a repository", { ...keys }, secretKeys, /synaxic:backupAccessKeyId: is set but backupRepository is not/],
    ["a repository without its key", { [`${P}backupRepository`]: JSON.stringify(repo) }, secretKeys, /synaxic:backupAccessKeyId: missing required secret; set it with `pulumi config set --secret backupAccessKeyId/],
    ["the key in plain text", { [`${P}backupRepository`]: JSON.stringify(repo), ...keys }, SECRET_KEYS, /synaxic:backupAccessKeyId: is stored in plain text/],
    ["no bucket", { [`${P}backupRepository`]: JSON.stringify({ ...repo, bucket: undefined }), ...keys }, secretKeys, /synaxic:backupRepository\[bucket\]: missing/],
    ["an endpoint with a scheme", { [`${P}backupRepository`]: JSON.stringify({ ...repo, endpoint: "https://s3.example.com" }), ...keys }, secretKeys, /synaxic:backupRepository\[endpoint\]: got "https:\/\/s3\.example\.com"; expected the S3 endpoint's DNS name/],
    ["an unknown field", { [`${P}backupRepository`]: JSON.stringify({ ...repo, acl: "public" }), ...keys }, secretKeys, /synaxic:backupRepository/],
    ["a weekday out of range", { [`${P}backupSchedule`]: JSON.stringify({ fullWeekday: 7, hourUtc: 3, verifyWeekday: 3 }) }, SECRET_KEYS, /synaxic:backupSchedule\[fullWeekday\]: got 7/],
    ["a drill weekday out of range", { [`${P}backupDrill`]: JSON.stringify({ weekday: 7 }) }, SECRET_KEYS, /synaxic:backupDrill\[weekday\]: got 7/],
    ["a drill bound under 10 minutes", { [`${P}backupDrill`]: JSON.stringify({ timeoutMinutes: 5 }) }, SECRET_KEYS, /synaxic:backupDrill\[timeoutMinutes\]: got 5/],
    ["an unknown drill field", { [`${P}backupDrill`]: JSON.stringify({ everyDays: 7 }) }, SECRET_KEYS, /synaxic:backupDrill/],
  ])("%s is refused", (_what, extra, secrets, message) => {
    expect(() => parseMain(extra as Record<string, string>, secrets)).toThrow(message);
  });

  it("backupDrill: each field defaults on its own; enabled false turns drills off", () => {
    const on = { [`${P}backupRepository`]: JSON.stringify(repo), ...keys };
    expect(parseMain({ ...on, [`${P}backupDrill`]: JSON.stringify({ hourUtc: 22 }) }, secretKeys).backup!.drill).toEqual({ weekday: 6, hourUtc: 22, timeoutMinutes: 120 });
    expect(parseMain({ ...on, [`${P}backupDrill`]: JSON.stringify({ weekday: 3, hourUtc: 1, timeoutMinutes: 45, enabled: true }) }, secretKeys).backup!.drill).toEqual({ weekday: 3, hourUtc: 1, timeoutMinutes: 45 });
    expect(parseMain({ ...on, [`${P}backupDrill`]: JSON.stringify({ enabled: false }) }, secretKeys).backup!.drill).toBeNull();
    expect(() => parseStackConfig(replicaRaw({ [`${P}backupDrill`]: JSON.stringify({ enabled: false }) }), SECRET_KEYS)).toThrow(/synaxic:backupDrill: is for the main stack/);
  });

  it("backupCipherPass: taken when given as a secret of at least 20 characters; refused in plain text, short, or without a repository", () => {
    const withPass = { [`${P}backupRepository`]: JSON.stringify(repo), ...keys, [`${P}backupCipherPass`]: "an-old-cipher-pass-0123456789" };
    expect(parseMain(withPass, new Set([...secretKeys, `${P}backupCipherPass`])).backup).not.toBeNull();
    expect(() => parseMain(withPass, secretKeys)).toThrow(/synaxic:backupCipherPass: is stored in plain text/);
    expect(() => parseMain({ ...withPass, [`${P}backupCipherPass`]: "short" }, new Set([...secretKeys, `${P}backupCipherPass`]))).toThrow(/synaxic:backupCipherPass: got .*; expected the repository's cipher pass: at least 20 characters/);
    expect(() => parseMain({ [`${P}backupCipherPass`]: "an-old-cipher-pass-0123456789" }, new Set([...secretKeys, `${P}backupCipherPass`]))).toThrow(/synaxic:backupCipherPass: is set but backupRepository is not/);
  });

  it("a replica stack refuses the main stack's backup keys", () => {
    expect(() => parseStackConfig(replicaRaw({ [`${P}backupRepository`]: JSON.stringify(repo) }), SECRET_KEYS)).toThrow(/synaxic:backupRepository: is for the main stack/);
  });
});

describe("backupRestore: a point-in-time restore of the primary", () => {
  const repo = JSON.stringify({ endpoint: "fsn1.your-objectstorage.com", bucket: "acme-synaxic", region: "fsn1" });
  const on = { [`${P}backupRepository`]: repo, [`${P}backupAccessKeyId`]: "AKIAEXAMPLE", [`${P}backupSecretAccessKey`]: "s3-secret" };
  const secretKeys = new Set([...SECRET_KEYS, `${P}backupAccessKeyId`, `${P}backupSecretAccessKey`]);
  const parse = (restore: unknown, extra: Record<string, string> = on) => parseMain({ ...extra, [`${P}backupRestore`]: JSON.stringify(restore) }, secretKeys);

  it("off by default; a time with its offset, or latest", () => {
    expect(parseMain(on, secretKeys).restore).toBeNull();
    expect(parse({ target: "2026-11-30 12:00:00+00", id: 1 }).restore).toEqual({ target: "2026-11-30 12:00:00+00", id: 1 });
    expect(parse({ target: "latest", id: 2 }).restore).toEqual({ target: "latest", id: 2 });
  });

  it.each([
    ["without a repository", { target: "latest", id: 1 }, {}, /synaxic:backupRestore: needs backupRepository/],
    ["without an id", { target: "latest" }, on, /synaxic:backupRestore\[id\]: missing/],
    ["without a target", { id: 1 }, on, /synaxic:backupRestore\[target\]: missing/],
    ["a time without its offset", { target: "2026-11-30 12:00:00", id: 1 }, on, /synaxic:backupRestore\[target\]: got "2026-11-30 12:00:00"; expected "latest" or a time with its UTC offset/],
    ["id 0", { target: "latest", id: 0 }, on, /synaxic:backupRestore\[id\]: got 0/],
  ])("%s is refused", (_what, restore, extra, message) => {
    expect(() => parse(restore, extra as Record<string, string>)).toThrow(message);
  });

  it("followPrimary on main is refused before anything else: the control stack says whom main follows (and stacks/main.ts then refuses the restore)", () => {
    expect(() => parseMain({ ...on, [`${P}followPrimary`]: "replica-1", [`${P}backupRestore`]: JSON.stringify({ target: "latest", id: 1 }) }, secretKeys)).toThrow(/synaxic:followPrimary: is no longer read: a host other than main becomes primary only through a control stack/);
  });
});
