import { memoryBudget } from "../../lib/memory";
import { formatKb, pgTune } from "../../lib/pgtune";
import { describe, expect, it, beforeAll } from "vitest";
import { join } from "node:path";
import { findLeaks, type RunResult } from "./harness";
import { runMain } from "./fixtures";
import type { mainStack } from "../../stacks/main";

type Run = RunResult<Awaited<ReturnType<typeof mainStack>>>;

const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";

function container(run: Run, nameIncludes: string) {
  return run.one(CONTAINER, nameIncludes).inputs;
}

function hostFileContent(run: Run, nameIncludes: string): string {
  return String(run.one(COMMAND, nameIncludes).inputs.stdin);
}

const runs: Record<number, Run> = {};

beforeAll(async () => {
  for (const n of [0, 1, 3]) runs[n] = await runMain(n);
}, 120_000);

describe.each([0, 1, 3])("main stack with %i replicas", (n) => {
  const replicaIps = Array.from({ length: n }, (_, i) => `10.10.0.${3 + i}`);

  it("registers the components", () => {
    const run = runs[n]!;
    const types = new Set(run.resources.map((r) => r.type));
    for (const t of [
      "synaxic:components:Host",
      "synaxic:components:FleetSecrets",
      "synaxic:components:Pki",
      "synaxic:components:PostgresMaster",
      "synaxic:components:RedisPair",
      "synaxic:components:SynaxicApp",
      "synaxic:components:NginxBalancer",
      "synaxic:components:Monitoring",
      "synaxic:components:Exporters",
      "hcloud:index/server:Server",
      "hcloud:index/firewall:Firewall",
      "hcloud:index/network:Network",
      "pulumi:providers:docker",
    ]) {
      expect(types, t).toContain(t);
    }
  });

  it("pulls only pinned images, the app's as configured", () => {
    const images = runs[n]!.of("docker:index/remoteImage:RemoteImage").map((r) => String(r.inputs.name));
    expect(images).toContain("registry.example.com/synaxic:1.4.2");
    expect(images.some((i) => /^postgres:17\./.test(i))).toBe(true);
    for (const i of images) expect(i).toMatch(/:(?!latest$)[A-Za-z0-9_.-]+$|@sha256:/);
  });

  it("database, cache and exporters listen on the private address and loopback, monitoring on loopback, only the balancer on every interface", () => {
    const run = runs[n]!;
    // Every service shares the VPS's network namespace; Docker publishes nothing.
    for (const c of run.of(CONTAINER)) {
      expect(c.inputs.networkMode, c.name).toBe("host");
      expect(c.inputs.ports ?? [], c.name).toEqual([]);
    }
    const upload = (name: string, file: string) => String(((container(run, name).uploads ?? []) as { file: string; content: string }[]).find((u) => u.file === file)?.content);
    const env = (name: string) => (container(run, name).envs ?? []) as string[];
    expect(String(run.one(COMMAND, "postgres-conf").inputs.stdin)).toMatch(/^listen_addresses = '10\.10\.0\.2,127\.0\.0\.1'$/m);
    expect(upload("redis-container", "/etc/synaxic/redis.conf")).toMatch(/^bind 10\.10\.0\.2 127\.0\.0\.1$/m);
    expect(upload("redis-container", "/etc/synaxic/redis.conf")).toMatch(/^port 0$/m);
    expect(env("exporters-postgres")).toContain("PG_EXPORTER_WEB_LISTEN_ADDRESS=10.10.0.2:9187");
    expect(env("exporters-redis")).toContain("REDIS_EXPORTER_WEB_LISTEN_ADDRESS=10.10.0.2:9121");
    expect(container(run, "exporters-node").command).toContain("--web.listen-address=10.10.0.2:9100");
    expect(container(run, "monitoring-prometheus").command).toContain("--web.listen-address=127.0.0.1:9090");
    expect(env("monitoring-grafana")).toEqual(expect.arrayContaining(["GF_SERVER_HTTP_ADDR=127.0.0.1", "GF_USERS_ALLOW_SIGN_UP=false", "GF_AUTH_ANONYMOUS_ENABLED=false"]));
    expect(env("app-container")).toContain("SERVER_ADDRESS=10.10.0.2");
    const nginx = hostFileContent(run, "balancer-conf");
    expect([...nginx.matchAll(/^\s*listen (\S+);/gm)].map((m) => m[1])).toEqual(["80"]);
  });

  it("pg_hba: replication only for the replication role from each replica /32 over SSL, app only from the app, everything else rejected", () => {
    const hba = hostFileContent(runs[n]!, "postgres-hba");
    const lines = hba.split("\n").filter((l) => l && !l.startsWith("#"));
    const replication = lines.filter((l) => l.split(/\s+/)[1] === "replication" && !l.endsWith("reject"));
    expect(replication.map((l) => l.split(/\s+/)).sort()).toEqual(replicaIps.map((ip) => ["hostssl", "replication", "replicator", `${ip}/32`, "scram-sha-256"]).sort());
    const app = lines.filter((l) => l.split(/\s+/)[2] === "synaxic");
    expect(lines.filter((l) => l.split(/\s+/)[2] === "replicator" || l.split(/\s+/)[2] === "synaxic_rewind").map((l) => l.split(/\s+/)[3]).sort()).toEqual(replicaIps.flatMap((ip) => [`${ip}/32`, `${ip}/32`]).sort());
    expect(app.map((l) => l.split(/\s+/))).toEqual([["hostssl", "synaxic", "synaxic", "127.0.0.1/32", "scram-sha-256"]]);
    expect(hba).not.toMatch(/\btrust\b/);
    expect(lines.filter((l) => /^host(ssl|nossl)?\s/.test(l) && !/\breject$/.test(l)).every((l) => l.startsWith("hostssl") && l.endsWith("scram-sha-256"))).toBe(true);
    expect(lines.slice(-2).map((l) => l.split(/\s+/))).toEqual([
      ["host", "all", "all", "0.0.0.0/0", "reject"],
      ["host", "all", "all", "::/0", "reject"],
    ]);
  });

  it("one replication slot per replica, created and dropped with it", () => {
    const slots = runs[n]!.of(COMMAND).filter((c) => c.name.startsWith("postgres-slot-"));
    expect(slots.map((s) => s.name).sort()).toEqual(Array.from({ length: n }, (_, i) => `postgres-slot-replica-${i + 1}`).sort());
    for (const s of slots) {
      const slot = `synaxic_${s.name.replace("postgres-slot-", "").replace(/-/g, "_")}`;
      expect(s.inputs.stdin).toContain(`pg_create_physical_replication_slot('${slot}', true)`);
      expect(s.inputs.delete).toContain(`pg_drop_replication_slot`);
      expect(s.inputs.delete).toContain(slot);
      expect(s.inputs.create).toMatch(/^timeout --kill-after=10 \d+ docker exec -i -u postgres synaxic-main-postgres psql /);
    }
    expect(runs[n]!.values.slots).toEqual(Object.fromEntries(Array.from({ length: n }, (_, i) => [`replica-${i + 1}`, `synaxic_replica_${i + 1}`])));
  });

  it("nginx: writes to the main app only (its current deploy slot), reads over the main app and every replica app in both its slots", () => {
    const conf = hostFileContent(runs[n]!, "balancer-conf");
    const block = (name: string) => conf.slice(conf.indexOf(`upstream ${name} {`), conf.indexOf("}", conf.indexOf(`upstream ${name} {`)));
    const servers = (b: string) => [...b.matchAll(/server (\S+) /g)].map((m) => m[1]);
    expect(servers(block("synaxic_write"))).toEqual(["10.10.0.2:8080"]);
    expect(servers(block("synaxic_read"))).toEqual(["10.10.0.2:8080", ...replicaIps.flatMap((ip) => [`${ip}:8080`, `${ip}:8081`])]);
    // A write that reached the app is never passed on: the main app is this stack's, in one known slot.
    expect(conf).toContain("proxy_next_upstream off;");
    expect(conf).toMatch(/keepalive \d+;/);
    expect(conf).toMatch(/max_fails=\d+ fail_timeout=/);
  });

  it("Prometheus targets every host's exporters, generated from the replica list", () => {
    const targets = runs[n]!.values.prometheusTargets as Record<string, string>;
    const hostsOf = (file: string) => (JSON.parse(targets[file]!) as { targets: string[]; labels: { host: string } }[]).map((g) => [g.labels.host, g.targets[0]]);
    const names = ["main", ...replicaIps.map((_, i) => `replica-${i + 1}`)];
    expect(hostsOf("node.json")).toEqual(names.map((h, i) => [h, `${i === 0 ? "10.10.0.2" : replicaIps[i - 1]}:9100`]));
    expect(hostsOf("postgres.json").map(([, t]) => t)).toEqual(["10.10.0.2:9187", ...replicaIps.map((ip) => `${ip}:9187`)]);
    // The app: both deploy slots of every host.
    const app = (JSON.parse(targets["synaxic-app.json"]!) as { targets: string[] }[]).map((g) => g.targets);
    expect(app).toEqual(["10.10.0.2", ...replicaIps].map((ip) => [`${ip}:8080`, `${ip}:8081`]));
    // The files on the host are the same text.
    expect(hostFileContent(runs[n]!, "monitoring-targets-node")).toBe(targets["node.json"]);
  });

  it("firewall: balancer to the world, SSH to the operators, PostgreSQL and Redis per replica /32, nothing else", () => {
    const rules = runs[n]!.one("hcloud:index/firewall:Firewall", "main-firewall").inputs.rules as { port: string; sourceIps: string[] }[];
    const byPort = (p: string) => rules.filter((r) => r.port === p).flatMap((r) => r.sourceIps);
    expect(byPort("80")).toEqual(["0.0.0.0/0", "::/0"]);
    expect(byPort("22")).toEqual(["198.51.100.0/24"]);
    expect(byPort("5432")).toEqual(replicaIps.map((ip) => `${ip}/32`));
    expect(byPort("6380")).toEqual(replicaIps.map((ip) => `${ip}/32`));
    expect(new Set(rules.map((r) => r.port))).toEqual(new Set(["80", "22", ...(n ? ["5432", "6380"] : [])]));
  });

  it("no generated secret appears in any input outside a secret", () => {
    const run = runs[n]!;
    expect(run.secretValues.length).toBeGreaterThan(10);
    const leaks = run.resources.flatMap((r) => findLeaks(r.raw, run.secretValues).map((p) => `${r.type} ${r.name}: ${p}`));
    expect(leaks).toEqual([]);
  });

  it("secret outputs are secret; plain outputs hold no secret", () => {
    const run = runs[n]!;
    for (const k of ["replicaCredentials", "replicaTls", "grafanaAdminPassword"]) expect(run.secretOutputs, k).toContain(k);
    for (const [k, v] of Object.entries(run.values)) {
      if (run.secretOutputs.has(k)) continue;
      expect(findLeaks(v, run.secretValues), `output ${k}`).toEqual([]);
    }
    expect(run.secretOutputs).not.toContain("fleet");
  });
}, 60_000);

describe("main stack details", () => {
  it("every remote command runs under a timeout and keeps secrets off its command line", () => {
    const run = runs[1]!;
    const cmds = run.of(COMMAND);
    expect(cmds.length).toBeGreaterThan(5);
    for (const c of cmds) {
      expect(c.inputs.create, c.name).toMatch(/^timeout --kill-after=10 \d+ /);
      expect(findLeaks(c.inputs.create, run.secretValues), c.name).toEqual([]);
    }
  });

  it("the roles SQL carries SCRAM verifiers, never a plain password, and is secret", () => {
    const run = runs[1]!;
    const roles = run.one(COMMAND, "postgres-roles");
    expect(roles.raw.stdin).toHaveProperty("value");
    const sql = String(roles.inputs.stdin);
    expect(sql).toMatch(/PASSWORD 'SCRAM-SHA-256\$4096:/);
    expect(run.secretValues.filter((s) => sql.includes(s))).toEqual([]);
  });

  it("private keys and credential files are uploaded 0600/0400, and their content only inside secrets", () => {
    const run = runs[1]!;
    const uploads = run.of(CONTAINER).flatMap((c) => ((c.inputs.uploads as Record<string, unknown>[] | undefined) ?? []).map((u) => ({ c: c.name, u })));
    const sensitive = uploads.filter(({ u }) => /\.key$|privkey|password|pgpass|\.acl$|redis\.conf$|\/run\/synaxic\//.test(String(u.file)));
    expect(sensitive.length).toBeGreaterThan(8);
    for (const { c, u } of sensitive) expect(String(u.permissions), `${c} ${String(u.file)}`).toMatch(/^0[46]00$/);
    // Each private key and password the mocks handed out reaches a container only through a secret.
    const containersRaw = run.of(CONTAINER).map((c) => c.raw);
    expect(findLeaks(containersRaw, run.secretValues)).toEqual([]);
    const plainText = JSON.stringify(run.of(CONTAINER).map((c) => c.inputs));
    expect(run.secretValues.filter((s) => plainText.includes(s)).length).toBeGreaterThan(3);
  });

  it("the Docker client reaches the host over SSH with the host key pinned", () => {
    const run = runs[0]!;
    const provider = run.of("pulumi:providers:docker")[0]!;
    const opts = provider.inputs.sshOpts as string[] | string;
    const list = typeof opts === "string" ? (JSON.parse(opts) as string[]) : opts;
    expect(list).toContain("StrictHostKeyChecking=yes");
    expect(list.join(" ")).not.toMatch(/StrictHostKeyChecking=no/);
    // The pinned key travels in the options (no known_hosts file of this checkout), and no other is trusted.
    expect(list).toContain("UserKnownHostsFile=/dev/null");
    expect(list).toContain("GlobalKnownHostsFile=/dev/null");
    expect(list.find((o) => o.startsWith("KnownHostsCommand="))).toMatch(/^KnownHostsCommand=\/bin\/echo 203\.0\.113\.\d+ ssh-ed25519 AAAA/);
    // The identity is outside the checkout, named after the stack and host, and holds the operator's key.
    const identity = list.find((o) => o.startsWith("IdentityFile="))!.slice("IdentityFile=".length);
    expect(identity).toBe(join(process.env.SYNAXIC_SSH_DIR!, "organization-synaxic-main-main"));
    expect(identity.startsWith(process.cwd())).toBe(false);
    expect(String(provider.inputs.host)).toMatch(/^ssh:\/\/root@203\.0\.113\.\d+:22$/);
  });

  it("the Hetzner server gets a host key we generated (pinned) and joins the private network through a ServerNetwork", () => {
    const run = runs[1]!;
    const server = run.one("hcloud:index/server:Server", "main-server");
    expect(server.raw.userData).toHaveProperty("value");
    expect(String(server.inputs.userData)).toContain("ed25519_private");
    // No inline network block (it detaches and re-attaches on updates); the server ignores the attachment it does not declare.
    expect(server.inputs.networks).toBeUndefined();
    expect(server.opts.ignoreChanges).toContain("networks");
    const attachment = run.one("hcloud:index/serverNetwork:ServerNetwork", "main-network");
    expect(attachment.inputs).toMatchObject({ serverId: 3001, networkId: 4001, ip: "10.10.0.2" });
    // The first command on the host waits for the private address to exist.
    expect(run.one(COMMAND, "main-ready").opts.dependsOn).toEqual(["main-network"]);
    const ready = run.one(COMMAND, "main-ready");
    const conn = ready.inputs.connection as { hostKey: string };
    const hostKey = run.one("tls:index/privateKey:PrivateKey", "main-host-key");
    expect(hostKey.inputs.algorithm).toBe("ED25519");
    expect(conn.hostKey).toMatch(/^ssh-ed25519 /);
  });

  it("Hetzner: sized from the catalogue, the subnet in the location's zone, the one SSH key registered here and exported for replicas", async () => {
    const run = runs[1]!;
    const conf = hostFileContent(run, "postgres-conf");
    // cx33 in the catalogue: 4 cores, 8 GB; PGTune gives a quarter of PostgreSQL's share of it to shared_buffers.
    expect(conf).toMatch(new RegExp(`^shared_buffers = '${formatKb(pgTune({ memoryMiB: memoryBudget("main", 8192).postgresMiB, cpus: 4, maxConnections: 100 }).sharedBuffersKb)}'$`, "m"));
    expect(run.one("hcloud:index/networkSubnet:NetworkSubnet", "private-subnet").inputs.networkZone).toBe("eu-central");
    const keys = run.of("hcloud:index/sshKey:SshKey");
    expect(keys.map((k) => k.name)).toEqual(["main-ssh-key"]);
    expect(run.one("hcloud:index/server:Server", "main-server").inputs.sshKeys).toEqual(["main-ssh-key-id"]);
    expect((run.values.fleet as { hetzner: unknown }).hetzner).toEqual({ networkZone: "eu-central", sshKeyId: "main-ssh-key-id" });
    const ash = await runMain(0, { "synaxic:serverType": "cpx32", "synaxic:location": "ash" });
    expect(ash.one("hcloud:index/networkSubnet:NetworkSubnet", "private-subnet").inputs.networkZone).toBe("us-east");
  });

  it("Hetzner: an unknown type, a type not offered in the location, or a zone that is not the location's is refused before anything is declared", async () => {
    await expect(runMain(0, { "synaxic:serverType": "cx99" })).rejects.toThrow(/synaxic:serverType: got "cx99"; Hetzner has no server type of that name/);
    await expect(runMain(0, { "synaxic:serverType": "cx33", "synaxic:location": "ash" })).rejects.toThrow(/synaxic:serverType: got "cx33"; Hetzner does not offer it in ash \(it does in fsn1, nbg1, hel1\)/);
    await expect(runMain(0, { "synaxic:location": "xyz1" })).rejects.toThrow(/synaxic:location: got "xyz1"; Hetzner has no location of that name/);
    await expect(runMain(0, { "synaxic:networkZone": "us-east" })).rejects.toThrow(/synaxic:networkZone: got "us-east"; location nbg1 is in network zone eu-central/);
  });

  it("Hetzner: servers are protected (Pulumi and Hetzner delete/rebuild protection) unless deleteDataOnDestroy", async () => {
    const server = runs[0]!.one("hcloud:index/server:Server", "main-server");
    expect(server.opts.protect).toBe(true);
    expect(server.inputs).toMatchObject({ deleteProtection: true, rebuildProtection: true });
    const teardown = (await runMain(0, { "synaxic:deleteDataOnDestroy": "true" })).one("hcloud:index/server:Server", "main-server");
    expect(teardown.opts.protect).toBe(false);
    expect(teardown.inputs).toMatchObject({ deleteProtection: false, rebuildProtection: false });
  });

  it("one memory budget: every container has its limit, together within the host; Redis maxmemory and the JVM heap follow from theirs", () => {
    const run = runs[1]!;
    const budget = memoryBudget("main", 8192);
    const containers = run.of(CONTAINER);
    for (const c of containers) {
      expect(c.inputs.memory, c.name).toBeGreaterThan(0);
      // No swap beyond the limit, and set explicitly: the provider reads it back (a diff otherwise).
      expect(c.inputs.memorySwap, c.name).toBe(c.inputs.memory);
    }
    const total = containers.reduce((a, c) => a + Number(c.inputs.memory), 0);
    expect(total + budget.osReserveMiB).toBeLessThanOrEqual(8192);
    expect(run.one(CONTAINER, "redis-container").inputs.memory).toBe(budget.limitsMiB.redis);
    const redisConf = JSON.stringify(run.one(CONTAINER, "redis-container").inputs.uploads);
    expect(redisConf).toContain(`maxmemory ${budget.redisMaxMemoryMiB}mb`);
    expect(run.one(CONTAINER, "app-container").inputs.envs).toContain(`JAVA_TOOL_OPTIONS=-XX:MaxRAMPercentage=${budget.appMaxRamPercentage}.0`);
  });

  it("a host too small for its budget is refused before anything is declared, naming the key that sets its memory", async () => {
    const small = { "synaxic:hostProvider": "existing", "synaxic:sshHost": "203.0.113.10", "synaxic:sshHostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExisting", "synaxic:cpus": "2", "synaxic:memoryMiB": "2048" };
    await expect(runMain(0, small)).rejects.toThrow(/synaxic:memoryMiB: got 2048; a main host needs at least \d+ MiB of memory/);
  });

  it("Prometheus has neither its lifecycle endpoint nor its admin API (reloads are SIGHUP)", () => {
    const command = runs[1]!.one(CONTAINER, "monitoring-prometheus").inputs.command as string[];
    expect(command.some((a) => /enable-lifecycle|enable-admin-api/.test(a))).toBe(false);
    expect(String(runs[1]!.one(COMMAND, "monitoring-reload").inputs.create)).toContain("kill -HUP 1");
  });

  it("every service container stops gracefully: a grace period on replace and destroy as well as on docker stop", () => {
    for (const c of runs[1]!.of("docker:index/container:Container")) {
      expect(c.inputs.destroyGraceSeconds, c.name).toBeGreaterThanOrEqual(10);
      expect(c.inputs.stopTimeout, c.name).toBe(c.inputs.destroyGraceSeconds);
    }
    expect(runs[1]!.one("docker:index/container:Container", "balancer").inputs.stopSignal).toBe("SIGQUIT");
  });

  it("an identity folder too long for ssh's control socket is refused, with the fix", async () => {
    const { checkControlPath } = await import("../../components/Host");
    expect(() => checkControlPath("/home/operator/.ssh/synaxic/organization-synaxic-main-main")).not.toThrow();
    expect(() => checkControlPath(`/${"d".repeat(41)}/id`)).not.toThrow();
    expect(() => checkControlPath(`/${"d".repeat(42)}/id`)).toThrow(/control socket would be 104 bytes long .*set SYNAXIC_SSH_DIR to a shorter absolute folder/);
  });

  it("the Docker client shares one SSH connection per host (ControlMaster), its socket beside the identity", () => {
    const raw = runs[0]!.of("pulumi:providers:docker")[0]!.inputs.sshOpts as string[] | string;
    const opts = typeof raw === "string" ? (JSON.parse(raw) as string[]) : raw;
    const values = opts.filter((_, i) => i % 2 === 1);
    expect(values).toEqual(expect.arrayContaining(["ControlMaster=auto", "ControlPersist=60"]));
    const identity = values.find((v) => v.startsWith("IdentityFile="))!.slice("IdentityFile=".length);
    expect(values).toContain(`ControlPath=${identity.replace(/[^/]*$/, "")}cm-%C`);
  });

  it("every step on the host runs after the first-boot gate, the Docker install and the host firewall", () => {
    const run = runs[1]!;
    // The host key rotation comes before the gate: the gate pins the key it prints (hostKeyRotation.test.ts).
    const steps = run.of(COMMAND).filter((c) => !["main-host-key-rotate", "main-ready", "main-docker", "main-host-firewall"].includes(c.name));
    expect(steps.length).toBeGreaterThan(5);
    for (const c of steps) expect(c.opts.dependsOn, c.name).toContain("main-host-firewall");
  });

  it("the host firewall keeps SSH on the host's own port; without adminCidrs (existing hosts) SSH is open to any source", async () => {
    const { hostFirewallRules } = await import("../../lib/fleet");
    const rules = hostFirewallRules([{ description: "SSH from the operators", port: "22", protocol: "tcp", sources: ["198.51.100.0/24"] }, { description: "HTTP", port: 80, protocol: "tcp", sources: ["0.0.0.0/0"] }], 2222);
    expect(rules[0]).toMatchObject({ port: 2222, sources: ["198.51.100.0/24"] });
    const open = hostFirewallRules([{ description: "HTTP", port: 80, protocol: "tcp", sources: ["0.0.0.0/0"] }], 2222);
    expect(open[0]).toMatchObject({ port: 2222, sources: ["0.0.0.0/0", "::/0"] });
  });

  it("the host firewall (nftables) admits each private port only from the hosts that need it, and is taken off with the stack", () => {
    const fw = runs[1]!.one(COMMAND, "main-host-firewall").inputs;
    const script = String(fw.stdin);
    const rule = (port: number) => script.split("\n").filter((l) => new RegExp(`dport ${port} `).test(l));
    expect(rule(5432)).toEqual([expect.stringMatching(/^\s*tcp dport 5432 ip saddr \{ 10\.10\.0\.3\/32 \} accept/)]);
    expect(rule(6380)).toEqual([expect.stringMatching(/^\s*tcp dport 6380 ip saddr \{ 10\.10\.0\.3\/32 \} accept/)]);
    expect(rule(22)).toEqual([expect.stringMatching(/^\s*tcp dport 22 ip saddr \{ 198\.51\.100\.0\/24 \} accept/)]);
    expect(rule(80)).toEqual([expect.stringMatching(/^\s*tcp dport 80 accept/)]);
    // Monitoring and the exporters' ports have no rule: loopback and the host's own traffic only.
    for (const p of [9090, 3000, 9100, 9187, 9121, 8080]) expect(rule(p), String(p)).toEqual([]);
    expect(script).toMatch(/policy drop/);
    expect(String(fw.delete)).toContain("nft delete table inet");
  });

  it("balancerConcurrency sizes the balancer's keep-alive pools: per app, per worker", async () => {
    const sized = await runMain(2, { "synaxic:balancerConcurrency": "100" });
    const conf = String(sized.one(COMMAND, "balancer-conf").inputs.stdin);
    const pools = [...conf.matchAll(/^\s*keepalive (\d+);/gm)].map((m) => Number(m[1]));
    // Writes: the main app alone; reads: the main app and two replicas.
    expect(pools.sort((a, b) => a - b)).toEqual([100, 300]);
    expect((sized.values.fleet as { balancerConcurrency: number }).balancerConcurrency).toBe(100);
  });

  it("the balancer limits each client address by default (balancerRateLimit, balancerRateBurst); 0 turns it off", async () => {
    expect(String(runs[0]!.one(COMMAND, "balancer-conf").inputs.stdin)).toContain("rate=50r/s");
    expect(String(runs[0]!.one(COMMAND, "balancer-conf").inputs.stdin)).toContain("burst=100 nodelay");
    const off = await runMain(0, { "synaxic:balancerRateLimit": "0" });
    expect(String(off.one(COMMAND, "balancer-conf").inputs.stdin)).not.toContain("limit_req");
  });

  it("the balancer sends paths that write on GET and requests with an API key to the writing app (balancerWritePaths, balancerApiKeyRequests), and replicas learn both", async () => {
    const conf = String(runs[1]!.one(COMMAND, "balancer-conf").inputs.stdin);
    for (const p of ["/oauth2/", "/login/oauth2/code/", "/login", "/logout", "/v1/auth/"]) expect(conf).toContain(`~^${p} 1;`);
    expect(conf).toContain("map $http_x_api_key $synaxic_api_key");
    expect((runs[1]!.values.fleet as { balancerRouting: unknown }).balancerRouting).toEqual({
      writePaths: ["/oauth2/", "/login/oauth2/code/", "/login", "/logout", "/v1/auth/"],
      apiKeyRequests: "writer",
    });
    const custom = await runMain(1, { "synaxic:balancerWritePaths": JSON.stringify(["/signup", "/v2/keys.json"]), "synaxic:balancerApiKeyRequests": "replicas" });
    const customConf = String(custom.one(COMMAND, "balancer-conf").inputs.stdin);
    expect(customConf).toContain("~^/signup 1;");
    expect(customConf).toContain("~^/v2/keys\\.json 1;");
    expect(customConf).not.toContain("~^/oauth2/ 1;");
    expect(customConf).not.toContain("$http_x_api_key");
    expect((custom.values.fleet as { balancerRouting: unknown }).balancerRouting).toEqual({ writePaths: ["/signup", "/v2/keys.json"], apiKeyRequests: "replicas" });
    await expect(runMain(1, { "synaxic:balancerWritePaths": JSON.stringify(["/login{1}"]) })).rejects.toThrow(/balancerWritePaths.*path prefixes/s);
    await expect(runMain(1, { "synaxic:balancerApiKeyRequests": "all" })).rejects.toThrow(/balancerApiKeyRequests.*writer.*replicas/s);
  });

  it("the app image replicas run is exported only through the main app's container (a new image reaches replicas after main runs it)", async () => {
    const fleet = runs[1]!.outputs.fleet as unknown as { allResources(): Promise<Set<{ urn: { promise(): Promise<string> } }>> };
    const urns = await Promise.all([...(await fleet.allResources())].map((r) => r.urn.promise()));
    expect(urns.some((u) => u.endsWith("::app-container"))).toBe(true);
    expect((runs[1]!.values.fleet as { appImage: string }).appImage).toBe(runs[1]!.one("docker:index/remoteImage:RemoteImage", "app-image").inputs.name);
  });

  it("the exporters start once PostgreSQL has its roles (the PostgreSQL exporter never fails a login at first start)", () => {
    const deps = runs[1]!.one("synaxic:components:Exporters", "exporters").opts.dependsOn;
    expect(deps.some((d) => /^postgres-/.test(d))).toBe(true);
  });

  it("bootstrapGeneration reaches the primary's bootstrap permit step (its only trigger)", async () => {
    expect(runs[0]!.one(COMMAND, "postgres-bootstrap-permit").inputs.triggers).toEqual([0]);
    const raised = await runMain(0, { "synaxic:bootstrapGeneration": "2" });
    expect(raised.one(COMMAND, "postgres-bootstrap-permit").inputs.triggers).toEqual([2]);
  });

  it("data volumes are kept on destroy unless the operator says otherwise", async () => {
    const kept = runs[0]!.of("docker:index/volume:Volume");
    expect(kept.map((v) => v.name).sort()).toEqual(["monitoring-alertmanager-data", "monitoring-grafana-data", "monitoring-prometheus-data", "postgres-data", "redis-data"]);
    for (const v of kept) expect(v.opts.retainOnDelete, v.name).toBe(true);
    const deleting = await runMain(0, { "synaxic:deleteDataOnDestroy": "true" });
    for (const v of deleting.of("docker:index/volume:Volume")) expect(v.opts.retainOnDelete, v.name).toBe(false);
  });

  it("nothing touches Docker before the host is ready and Docker installed", () => {
    const run = runs[0]!;
    const provider = run.of("pulumi:providers:docker")[0]!;
    expect(provider.opts.dependsOn).toEqual(["main-host-firewall"]);
    expect(run.one(COMMAND, "main-host-firewall").opts.dependsOn).toEqual(["main-docker"]);
    expect(run.one(COMMAND, "main-docker").opts.dependsOn).toEqual(["main-ready"]);
    const ready = run.one(COMMAND, "main-ready").inputs;
    expect(String(ready.stdin)).toContain("cloud-init status");
    expect((ready.connection as { dialErrorLimit: number }).dialErrorLimit).toBeGreaterThan(0);
  });

  it("containers with fixed names are replaced by deleting the old one first; the app, whose name carries its deploy slot, by creating the new one first", () => {
    for (const c of runs[1]!.of(CONTAINER).filter((c) => c.name !== "app-container")) expect(c.opts.deleteBeforeReplace, c.name).toBe(true);
    const app = runs[1]!.one(CONTAINER, "app-container");
    expect(app.opts.deleteBeforeReplace).toBeUndefined();
    expect(app.inputs.name).toBe("synaxic-main-app-a");
  });

  it("the app starts after the database roles and Redis exist; the balancer after the app", () => {
    const run = runs[1]!;
    expect(run.one("synaxic:components:SynaxicApp", "app").opts.dependsOn).toEqual(["postgres-roles", "redis"]);
    expect(run.one("synaxic:components:NginxBalancer", "balancer").opts.dependsOn).toEqual(["app"]);
  });
});

describe("an existing server reached over SSH", () => {
  it("uses the given address, user, port and pinned host key; no Hetzner resources; sudo for a non-root user", async () => {
    const run = await runMain(1, {
      "synaxic:hostProvider": "existing",
      "synaxic:sshHost": "203.0.113.10",
      "synaxic:sshPort": "2222",
      "synaxic:sshUser": "deploy",
      "synaxic:sshHostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExistingHostKey deploy@main",
      "synaxic:cpus": "8",
      "synaxic:memoryMiB": "32768",
    });
    expect(run.resources.filter((r) => r.type.startsWith("hcloud:"))).toEqual([]);
    const ready = run.one(COMMAND, "main-ready").inputs;
    expect(ready.connection).toMatchObject({ host: "203.0.113.10", port: 2222, user: "deploy", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExistingHostKey deploy@main" });
    expect(ready.create).toMatch(/^timeout --kill-after=10 \d+ sudo -n bash -s$/);
    expect(String(run.one(COMMAND, "postgres-roles").inputs.create)).toContain("sudo -n docker exec -i -u postgres synaxic-main-postgres psql");
    expect(run.of("pulumi:providers:docker")[0]!.inputs.host).toBe("ssh://deploy@203.0.113.10:2222");
    expect(run.values.sshPort).toBe(2222);
    // Sized from the configured CPUs and memory: PGTune's shared_buffers is a quarter of PostgreSQL's share of 32 GiB.
    const conf = String(run.one(COMMAND, "postgres-conf").inputs.stdin);
    const share = memoryBudget("main", 32768).postgresMiB;
    expect(run.one(CONTAINER, "postgres-container").inputs.memory).toBe(share);
    expect(conf).toMatch(new RegExp(`^shared_buffers = '${formatKb(pgTune({ memoryMiB: share, cpus: 8, maxConnections: 100 }).sharedBuffersKb)}'$`, "m"));
  });
});

describe("the PostgreSQL image is built on the host (official image + pinned pgBackRest)", () => {
  it("the build step feeds the rendered Dockerfile on stdin, tags it after its inputs, re-runs when the base image changes, and the container runs the ID it prints", () => {
    const run = runs[1]!;
    const build = run.one(COMMAND, "postgres-image-build");
    expect(String(build.inputs.stdin)).toMatch(/^FROM postgres:17\.\S+$/m);
    expect(String(build.inputs.stdin)).toContain("pgbackrest=$want");
    expect(String(build.inputs.create)).toMatch(/docker build --network host --tag "\$1" - .* synaxic-local\/postgres:[a-f0-9]{16}$/);
    const base = run.one("docker:index/remoteImage:RemoteImage", "postgres-image");
    expect(base.inputs.name).toMatch(/^postgres:17\./);
    expect(build.opts.dependsOn).toContain(base.name);
    const baseId = (build.inputs.triggers as string[])[0];
    expect(baseId).toMatch(/^sha256:[a-f0-9]+$/);
    const pg = run.one(CONTAINER, "postgres-container");
    expect(pg.inputs.image).toMatch(/^sha256:[a-f0-9]+$/);
    expect(pg.inputs.image).not.toBe(baseId);
  });
});
