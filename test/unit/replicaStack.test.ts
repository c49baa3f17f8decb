import { describe, expect, it, beforeAll } from "vitest";
import { findLeaks, type Recorded } from "./harness";
import { runMain, runReplica } from "./fixtures";
import { INITIAL_CONTROL, nextControl } from "../../lib/control";

/** The control stack's state after replica-1 took over from main (fenced by a stop), and after main took the role back. */
const REPLICA_1_PRIMARY = nextControl(INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 1, fence: { main: "stop" } }).next;
const MAIN_AGAIN = nextControl(REPLICA_1_PRIMARY, { primary: "main", primaryGeneration: 2, fence: { "replica-1": "stop" } }).next;

const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";

type Uploads = { file: string; content?: string; permissions: string }[];
const uploadsOf = (r: Recorded) => (r.inputs.uploads ?? []) as Uploads;
const fileIn = (r: Recorded, path: string) => uploadsOf(r).find((u) => u.file === path);
/** postgresql.conf is a file on the host, written by its own command from stdin. */
const confOf = (run: { one: (type: string, name: string) => Recorded }) => String(run.one(COMMAND, "postgres-conf").inputs.stdin);

let base: Awaited<ReturnType<typeof runReplica>>;
beforeAll(async () => {
  base = await runReplica("replica-1", "10.10.0.3");
}, 120_000);

describe("a replica stack wired to the main stack's real outputs", () => {
  it("registers a streaming replica, a Redis replica, the read-mode app and exporters", () => {
    const types = new Set(base.replica.resources.map((r) => r.type));
    for (const t of ["pulumi:pulumi:StackReference", "synaxic:components:Host", "synaxic:components:PostgresReplica", "synaxic:components:RedisPair", "synaxic:components:SynaxicApp", "synaxic:components:Exporters"]) {
      expect(types).toContain(t);
    }
    // Only the main stack owns the fleet's CA and passwords.
    expect(types).not.toContain("random:index/randomPassword:RandomPassword");
    expect(types).not.toContain("tls:index/selfSignedCert:SelfSignedCert");
    expect(types).not.toContain("synaxic:components:NginxBalancer");
  });

  it("PostgreSQL streams from the primary's private address through its own slot, verify-full, password from a passfile", () => {
    const pg = base.replica.one(CONTAINER, "postgres-container");
    const conf = confOf(base.replica);
    expect(conf).toMatch(/primary_conninfo = '.*host=10\.10\.0\.2 .*port=5432 .*user=replicator .*passfile=\/run\/synaxic\/pgpass .*sslmode=verify-full .*sslrootcert=\/etc\/synaxic\/tls\/ca\.crt/);
    expect(conf).not.toMatch(/password=/);
    expect(conf).toContain("primary_slot_name = 'synaxic_replica_1'");
    expect(conf).toContain("recovery_target_timeline = 'latest'");
    expect(conf).toContain("hot_standby_feedback = on");
    const pgpass = fileIn(pg, "/run/synaxic/pgpass")!;
    expect(pgpass.permissions).toBe("0600");
    expect(String(pgpass.content)).toMatch(/^10\.10\.0\.2:5432:replication:replicator:/);
    expect(String(fileIn(pg, "/usr/local/bin/synaxic-entrypoint")!.content)).toContain("pg_basebackup");
    expect(base.replica.values.postgresMode).toBe("replica");
    // Listens on its own private address and loopback only.
    expect(conf).toMatch(/^listen_addresses = '10\.10\.0\.3,127\.0\.0\.1'$/m);
  });

  it("Redis follows the master over TLS as the replication user and announces its own address", () => {
    const redis = base.replica.one(CONTAINER, "redis-container");
    const conf = String(fileIn(redis, "/etc/synaxic/redis.conf")!.content);
    expect(conf).toMatch(/^replicaof 10\.10\.0\.2 6380$/m);
    expect(conf).toMatch(/^tls-replication yes$/m);
    expect(conf).toMatch(/^masteruser replicator$/m);
    expect(conf).toMatch(/^replica-read-only yes$/m);
    expect(conf).toMatch(/^replica-announce-ip 10\.10\.0\.3$/m);
    expect(conf).toMatch(/^port 0$/m);
    expect(fileIn(redis, "/etc/synaxic/redis.conf")!.permissions).toBe("0600");
  });

  it("the app reads its local replica and uses the Redis master for everything (its client is single-server); no variable the app ignores", () => {
    const app = base.replica.one(CONTAINER, "app-container");
    const env = Object.fromEntries((app.inputs.envs as string[]).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
    expect(env.SPRING_DATASOURCE_URL).toMatch(/^jdbc:postgresql:\/\/127\.0\.0\.1:5432\/synaxic\?sslmode=verify-full/);
    expect(env.SPRING_DATA_REDIS_MASTER_HOST).toBe("10.10.0.2");
    expect(env.SPRING_DATASOURCE_URL).toMatch(/&readOnly=true$/);
    for (const ignored of ["SPRING_DATA_REDIS_REPLICA_HOST", "SPRING_DATA_REDIS_SLAVE_HOSTS", "SYNAXIC_REDIS_READ_MODE"]) expect(env[ignored]).toBeUndefined();
    expect(Object.keys(env).filter((k) => /PASSWORD|SECRET/.test(k))).toEqual([]);
    expect(env.SERVER_ADDRESS).toBe("10.10.0.3");
  });

  it("cross-stack secrets stay secret: no main-stack secret appears in a plain input or output", () => {
    const secrets = [...base.main.secretValues];
    const leaks = base.replica.resources.flatMap((r) => findLeaks(r.raw, secrets).map((p) => `${r.type} ${r.name}: ${p}`));
    expect(leaks).toEqual([]);
    // And they did arrive (inside secrets): the passfile holds the replication password.
    const pg = base.replica.one(CONTAINER, "postgres-container");
    const raw = JSON.stringify(pg.raw.uploads);
    expect(secrets.some((s) => raw.includes(s))).toBe(true);
    for (const [k, v] of Object.entries(base.replica.values)) expect(findLeaks(v, secrets), k).toEqual([]);
  });

  it("the firewall admits the main host to the app and exporters, the fleet to PostgreSQL and Redis", () => {
    const rules = base.replica.one("hcloud:index/firewall:Firewall", "replica-1-firewall").inputs.rules as { port: string; sourceIps: string[] }[];
    const by = (p: string) => rules.filter((r) => r.port === p).flatMap((r) => r.sourceIps);
    expect(by("8080")).toEqual(["10.10.0.2/32", "10.10.0.4/32"]);
    expect(by("9100")).toEqual(["10.10.0.2/32"]);
    expect(by("5432")).toEqual(["10.10.0.2/32", "10.10.0.4/32"]);
    expect(rules.some((r) => r.sourceIps.includes("0.0.0.0/0"))).toBe(false);
  });
});

describe("a Hetzner replica next to a Hetzner main stack", () => {
  it("registers no second SSH key (Hetzner refuses a duplicate fingerprint): its server uses the main stack's key and network", async () => {
    const { main, replica } = await runReplica("replica-1", "10.10.0.3");
    expect(main.of("hcloud:index/sshKey:SshKey")).toHaveLength(1);
    expect(replica.of("hcloud:index/sshKey:SshKey")).toEqual([]);
    const server = replica.one("hcloud:index/server:Server", "replica-1-server");
    expect(server.inputs.sshKeys).toEqual(["main-ssh-key-id"]);
    expect(server.opts.protect).toBe(true);
    expect(replica.one("hcloud:index/serverNetwork:ServerNetwork", "replica-1-network").inputs).toMatchObject({ networkId: 4001, ip: "10.10.0.3" });
  });

  it("a location outside the main stack's network zone is refused, naming the key", async () => {
    await expect(runReplica("replica-1", "10.10.0.3", { extra: { "synaxic:serverType": "cpx22", "synaxic:location": "ash" } })).rejects.toThrow(
      /synaxic:location: got "ash", in network zone us-east; the main stack's private network is in eu-central/,
    );
  });

  it("a Hetzner replica of a main stack that is not on Hetzner is refused", async () => {
    await expect(runReplica("replica-1", "10.10.0.3", { mutateMainOutputs: (o) => ((o.fleet as Record<string, unknown>).hetzner = null) })).rejects.toThrow(
      /synaxic:hostProvider: got "hetzner", but the main stack acme\/synaxic\/main is not on Hetzner/,
    );
  });
});

describe("main-stack outputs the replica cannot use give an error naming the output", () => {
  const cases: [string, (o: Record<string, any>) => void, RegExp][] = [
    ["fleet missing", (o) => delete o.fleet, /output "fleet" is missing/],
    ["malformed replica address", (o) => (o.fleet.replicas[0].privateIp = "10.10.0"), /output "fleet\.replicas\.0\.privateIp" is malformed/],
    ["credentials missing", (o) => delete o.replicaCredentials, /output "replicaCredentials" is missing/],
    ["a password missing", (o) => delete o.replicaCredentials.redisReplication, /output "replicaCredentials\.redisReplication" is malformed/],
    ["this replica not admitted", (o) => (o.fleet.replicas = o.fleet.replicas.filter((r: { name: string }) => r.name !== "replica-1")), /output "fleet\.replicas" has no replica named "replica-1": add "replica-1=10\.10\.0\.3"/],
    ["this replica's certificate malformed", (o) => (o.replicaCerts["replica-1"].postgres.certPem = "x"), /output "replicaCerts\.replica-1\.postgres\.certPem" is malformed/],
  ];
  for (const [what, mutate, message] of cases) {
    it(what, async () => {
      await expect(runReplica("replica-1", "10.10.0.3", { mutateMainOutputs: mutate })).rejects.toThrow(message);
    });
  }
});

describe("promotion and re-initialisation change exactly what they should", () => {
  const snapshot = (resources: Recorded[]) => new Map(resources.map((r) => [`${r.type}::${r.name}`, JSON.stringify(r.inputs)]));
  const diff = (a: Recorded[], b: Recorded[]) => {
    const A = snapshot(a);
    const B = snapshot(b);
    return {
      added: [...B.keys()].filter((k) => !A.has(k)).sort(),
      removed: [...A.keys()].filter((k) => !B.has(k)).sort(),
      changed: [...B.keys()].filter((k) => A.has(k) && A.get(k) !== B.get(k)).sort(),
    };
  };

  it("named primary by the control stack: PostgreSQL promoted on the running standby, Redis REPLICAOF NO ONE, the app in write mode", async () => {
    const before = await runReplica("replica-1", "10.10.0.3", { control: INITIAL_CONTROL });
    const { replica } = await runReplica("replica-1", "10.10.0.3", { control: REPLICA_1_PRIMARY });
    const d = diff(before.replica.resources, replica.resources);
    const added = d.added.filter((k) => !k.includes("::balancer"));
    expect(added).toEqual([
      `${COMMAND}::postgres-promote`,
      // It keeps WAL for everyone who will follow it: the old main host and the other replica.
      `${COMMAND}::postgres-slot-main`,
      `${COMMAND}::postgres-slot-replica-2`,
      `${COMMAND}::redis-promote`,
    ].sort());
    // It is the entry point now: a balancer writing to itself, reading from every other app.
    expect(d.added.filter((k) => k.includes("::balancer")).length).toBeGreaterThan(2);
    const conf = String(replica.one(COMMAND, "balancer-conf").inputs.stdin);
    expect(conf).toMatch(/upstream synaxic_write \{[^}]*server 10\.10\.0\.3:8080 /);
    // The main stack's routing (balancerWritePaths, balancerApiKeyRequests) comes along.
    expect(conf).toContain("~^/login/oauth2/code/ 1;");
    expect(conf).toContain("map $http_x_api_key $synaxic_api_key");
    expect(d.removed).toEqual([]);
    expect(d.changed.filter((k) => k.startsWith(CONTAINER))).toEqual([`${CONTAINER}::app-container`, `${CONTAINER}::postgres-container`, `${CONTAINER}::redis-container`]);
    expect(d.changed).toContain("hcloud:index/firewall:Firewall::replica-1-firewall");
    expect(String(replica.one(COMMAND, "postgres-promote").inputs.stdin)).toContain("pg_promote(true, 60)");
    expect(String(replica.one(COMMAND, "redis-promote").inputs.create)).toContain("REPLICAOF NO ONE");
    const redisConf = String(fileIn(replica.one(CONTAINER, "redis-container"), "/etc/synaxic/redis.conf")!.content);
    expect(redisConf).not.toMatch(/^replicaof /m);
    const env = (replica.one(CONTAINER, "app-container").inputs.envs as string[]).join("\n");
    expect(env).toContain("SPRING_DATA_REDIS_MASTER_HOST=10.10.0.3");
    expect(env).not.toContain("readOnly=true");
    expect(replica.values.postgresMode).toBe("promoted");
    expect(String(fileIn(replica.one(CONTAINER, "postgres-container"), "/usr/local/bin/synaxic-entrypoint")!.content)).toMatch(/MODE=promoted|mode promoted|"promoted"/);
    // The container is re-created only after the promotion ran.
    expect(replica.one(CONTAINER, "postgres-container").opts.dependsOn).toEqual(expect.arrayContaining(["postgres-hba", "postgres-promote"]));
  });

  it("reinitGeneration: a new, empty data volume for this replica only, old generations removed", async () => {
    const { replica } = await runReplica("replica-1", "10.10.0.3", { extra: { "synaxic:reinitGeneration": "3" } });
    const d = diff(base.replica.resources, replica.resources);
    expect(d.added).toEqual([`${COMMAND}::postgres-reinit-cleanup`]);
    // The volume and the container that mounts it; nothing else.
    expect(d.changed).toEqual([`${CONTAINER}::postgres-container`, "docker:index/volume:Volume::postgres-data"]);
    const mounted = (replica.one(CONTAINER, "postgres-container").inputs.volumes as { volumeName: string }[]).map((v) => v.volumeName);
    expect(mounted).toEqual(["synaxic-replica-1-pgdata-g3"]);
    expect(replica.one("docker:index/volume:Volume", "postgres-data").inputs.name).toBe("synaxic-replica-1-pgdata-g3");
    expect(String(replica.one(COMMAND, "postgres-reinit-cleanup").inputs.create)).toContain("synaxic-replica-1-pgdata-g3");
  });
});

describe("synchronousReplication any1 (main's key)", () => {
  it("every server names the other hosts: main its replicas, a replica main and the other replica (for when it is promoted); replicas take it from main's fleet output; a change is a reload", async () => {
    const standbyNames = (conf: string) => conf.split("\n").filter((l) => l.startsWith("synchronous_standby_names"));
    const { main, replica } = await runReplica("replica-1", "10.10.0.3", { mainExtra: { "synaxic:synchronousReplication": "any1" } });
    expect(standbyNames(confOf(main))).toEqual([`synchronous_standby_names = 'ANY 1 ("replica-1", "replica-2")'`]);
    expect(standbyNames(confOf(replica))).toEqual([`synchronous_standby_names = 'ANY 1 ("main", "replica-2")'`]);
    // Each replica is named by its application_name, which its primary_conninfo carries.
    expect(confOf(replica)).toMatch(/^primary_conninfo = '.* application_name=replica-1 /m);
    expect((main.values.fleet as { postgres: { synchronousReplication: string } }).postgres.synchronousReplication).toBe("any1");
    // Off (the default): no line anywhere, and turning it on changes each server's file and reload step only.
    expect(standbyNames(confOf(base.main))).toEqual([]);
    expect(standbyNames(confOf(base.replica))).toEqual([]);
    const changed = replica.resources.filter((r) => JSON.stringify(r.inputs) !== JSON.stringify(base.replica.resources.find((b) => b.type === r.type && b.name === r.name)?.inputs)).map((r) => r.name).sort();
    expect(changed).toEqual(["postgres-conf", "postgres-hba-reload"]);
    // The deployment's own role SQL does not wait for a standby.
    expect(String(main.one(COMMAND, "postgres-roles").inputs.stdin)).toContain("SET synchronous_commit = local;");
  });
});

describe("moving the main VPS", () => {
  it("one config change on main; the replica's next up re-points PostgreSQL, Redis and the app, and nothing else", async () => {
    const { replica } = await runReplica("replica-1", "10.10.0.3", { mainExtra: { "synaxic:privateIp": "10.10.0.9" } });
    const pg = replica.one(CONTAINER, "postgres-container");
    expect(confOf(replica)).toMatch(/primary_conninfo = '.*host=10\.10\.0\.9 /);
    expect(String(fileIn(pg, "/run/synaxic/pgpass")!.content)).toMatch(/^10\.10\.0\.9:5432:replication:/);
    expect(String(fileIn(replica.one(CONTAINER, "redis-container"), "/etc/synaxic/redis.conf")!.content)).toMatch(/^replicaof 10\.10\.0\.9 6380$/m);
    expect(replica.one(CONTAINER, "app-container").inputs.envs).toContain("SPRING_DATA_REDIS_MASTER_HOST=10.10.0.9");
    const key = (r: Recorded) => `${r.type}::${r.name}`;
    const before = new Map(base.replica.resources.map((r) => [key(r), JSON.stringify(r.inputs)]));
    const changed = replica.resources.filter((r) => before.get(key(r)) !== JSON.stringify(r.inputs)).map((r) => r.name).sort();
    // The app's settings changed, so its slot step runs again (its stdin is the new settings digest) and picks the other slot.
    expect(changed).toEqual(["app-container", "app-slot", "postgres-conf", "postgres-container", "postgres-hba", "postgres-hba-reload", "redis-container", "replica-1-firewall", "replica-1-host-firewall"]);
  });
});

describe("after a failover, the other replicas follow the promoted one", () => {
  it("re-points PostgreSQL, Redis and the app to the replica the control stack names", async () => {
    const { replica } = await runReplica("replica-2", "10.10.0.4", { control: REPLICA_1_PRIMARY });
    const pg = replica.one(CONTAINER, "postgres-container");
    expect(confOf(replica)).toMatch(/primary_conninfo = '.*host=10\.10\.0\.3 /);
    expect(String(fileIn(pg, "/run/synaxic/pgpass")!.content)).toMatch(/^10\.10\.0\.3:5432:replication:replicator:/);
    expect(String(fileIn(replica.one(CONTAINER, "redis-container"), "/etc/synaxic/redis.conf")!.content)).toMatch(/^replicaof 10\.10\.0\.3 6380$/m);
    expect((replica.one(CONTAINER, "app-container").inputs.envs as string[])).toContain("SPRING_DATA_REDIS_MASTER_HOST=10.10.0.3");
    // Under a control stack the output is the control stack's primary (stacks/control.ts hostAccessOutputs).
    expect(replica.values.primary).toBe("replica-1");
    expect(replica.values.controlGeneration).toBe(1);
  });
  it("a control stack that names no host of the fleet is refused, naming the key", async () => {
    await expect(runReplica("replica-2", "10.10.0.4", { control: { ...REPLICA_1_PRIMARY, primary: "replica-9" } })).rejects.toThrow(/synaxic:controlStack: names "replica-9" as primary, which is not a host of this fleet \(main, replica-1, replica-2\)/);
  });
  it("a former primary the control stack records as fenced starts its entrypoint in rejoin mode (pg_rewind its diverged data)", async () => {
    const { replica } = await runReplica("replica-1", "10.10.0.3", { control: MAIN_AGAIN });
    expect(replica.values.postgresMode).toBe("rejoin");
    expect(String(fileIn(replica.one(CONTAINER, "postgres-container"), "/usr/local/bin/synaxic-entrypoint")!.content)).toContain("MODE=rejoin");
  });
});

describe("adding and removing a replica on main changes exactly the expected resources", () => {
  it("replica-2 added: a slot, its certificates, and new pg_hba, firewall, upstream and target lines; nothing else", async () => {
    const one = await runMain(["replica-1=10.10.0.3"]);
    const two = await runMain(["replica-1=10.10.0.3", "replica-2=10.10.0.4"]);
    const names = (rs: Recorded[]) => new Map(rs.map((r) => [`${r.type}::${r.name}`, JSON.stringify(r.inputs)]));
    const A = names(one.resources);
    const B = names(two.resources);
    const nameOf = (k: string) => k.slice(k.lastIndexOf("::") + 2);
    const added = [...B.keys()].filter((k) => !A.has(k)).map(nameOf).sort();
    const changed = [...B.keys()].filter((k) => A.has(k) && A.get(k) !== B.get(k)).map(nameOf).sort();
    expect(added).toEqual(
      [
        "postgres-slot-replica-2",
        // Its stack, where main reads its certificate requests; no certificate until it has published them (certRequests.test.ts).
        "replica-stack-replica-2",
      ].sort(),
    );
    expect(changed).toEqual(
      [
        "balancer-conf",
        "balancer-reload",
        "main-firewall",
        "main-host-firewall",
        "monitoring-reload",
        "monitoring-rules",
        "monitoring-targets-node",
        "monitoring-targets-postgres",
        "monitoring-targets-redis",
        "monitoring-targets-synaxic-app",
        "postgres-hba",
        "postgres-hba-reload",
      ].sort(),
    );
    // Removing it again is the exact reverse.
    const back = await runMain(["replica-1=10.10.0.3"]);
    expect(names(back.resources)).toEqual(A);
  });
});

describe("the main host after a failover", () => {
  it("followPrimary: its old primary data rejoins as a standby of the promoted replica (pg_rewind), its Redis and app follow, writes go to the promoted app", async () => {
    const run = await runMain(2, {}, { control: REPLICA_1_PRIMARY });
    const pgComponent = run.one("synaxic:components:PostgresReplica", "postgres");
    // Same URN as the primary it replaces: the container and files are updated in place, the data volume kept.
    expect(pgComponent.opts.aliasTypes).toEqual(["synaxic:components:PostgresMaster"]);
    expect(run.of("synaxic:components:PostgresMaster")).toEqual([]);
    const pg = run.one(CONTAINER, "postgres-container");
    expect(pg.inputs.volumes).toEqual([expect.objectContaining({ volumeName: "synaxic-main-pgdata" })]);
    const conf = confOf(run);
    expect(conf).toMatch(/primary_conninfo = '.*host=10\.10\.0\.3 /);
    expect(conf).toContain("primary_slot_name = 'synaxic_main'");
    expect(String(fileIn(pg, "/usr/local/bin/synaxic-entrypoint")!.content)).toContain("MODE=rejoin");
    // No roles or slots are managed on a standby.
    expect(run.of(COMMAND).filter((c) => c.name === "postgres-roles" || c.name.startsWith("postgres-slot-"))).toEqual([]);
    expect(String(fileIn(run.one(CONTAINER, "redis-container"), "/etc/synaxic/redis.conf")!.content)).toMatch(/^replicaof 10\.10\.0\.3 6380$/m);
    expect((run.one(CONTAINER, "app-container").inputs.envs as string[]).find((e) => e.startsWith("SPRING_DATASOURCE_URL="))).toMatch(/readOnly=true/);
    expect(run.one(CONTAINER, "app-container").inputs.envs).toContain("SPRING_DATA_REDIS_MASTER_HOST=10.10.0.3");
    const nginx = String(run.one(COMMAND, "balancer-conf").inputs.stdin);
    expect(nginx).toMatch(/upstream synaxic_write \{[^}]*server 10\.10\.0\.3:8080 /);
    expect(nginx).toMatch(/upstream synaxic_read \{[^}]*server 10\.10\.0\.2:8080 /);
    expect(run.values.postgresMode).toBe("rejoin");
    // The promoted replica's balancer reads from this host's app: its firewalls admit that replica there, and no other.
    const appRules = (run.one("hcloud:index/firewall:Firewall", "main-firewall").inputs.rules as { port: string; sourceIps: string[] }[]).filter((r) => r.port === "8080");
    expect(appRules.flatMap((r) => r.sourceIps)).toEqual(["10.10.0.3/32"]);
    for (const [port, slot] of [[8080, "a"], [8081, "b"]] as const) {
      expect(String(run.one(COMMAND, "main-host-firewall").inputs.stdin)).toMatch(new RegExp(`tcp dport ${port} ip saddr \\{ 10\\.10\\.0\\.3/32 \\} accept comment "App from the balancer on replica-1 \\(deploy slot ${slot}\\)"`));
    }
    // The promoted replica keeps a slot for it.
    const { replica } = await runReplica("replica-1", "10.10.0.3", { control: REPLICA_1_PRIMARY });
    expect(String(replica.one(COMMAND, "postgres-slot-main").inputs.stdin)).toContain("'synaxic_main'");
  });

  it("named primary again: the main host takes the primary role back, promoting its standby before it starts as the primary", async () => {
    const run = await runMain(2, {}, { control: MAIN_AGAIN });
    expect(run.one("synaxic:components:PostgresMaster", "postgres").opts.aliasTypes).toEqual(["synaxic:components:PostgresReplica"]);
    expect(String(run.one(COMMAND, "postgres-promote").inputs.stdin)).toContain("pg_promote(true, 60)");
    expect(run.one(CONTAINER, "postgres-container").opts.dependsOn).toContain("postgres-promote");
    expect(String(run.one(COMMAND, "redis-promote").inputs.create)).toContain("REPLICAOF NO ONE");
    expect(String(fileIn(run.one(CONTAINER, "redis-container"), "/etc/synaxic/redis.conf")!.content)).not.toMatch(/^replicaof /m);
    expect(run.one(COMMAND, "postgres-roles")).toBeTruthy();
    expect(run.of(COMMAND).filter((c) => c.name.startsWith("postgres-slot-")).length).toBe(2);
  });

  it("a restore while the control stack names a replica as primary is refused: it would bring back the host that follows", async () => {
    const backup = {
      "synaxic:backupRepository": JSON.stringify({ endpoint: "fsn1.your-objectstorage.com", bucket: "synaxic-backups", region: "fsn1" }),
      "synaxic:backupAccessKeyId": "AccessKeyIdValue0123",
      "synaxic:backupSecretAccessKey": "SecretAccessKeyValue0123",
      "synaxic:backupRestore": JSON.stringify({ target: "latest", id: 1 }),
    };
    await expect(runMain(2, backup, { control: REPLICA_1_PRIMARY })).rejects.toThrow(/synaxic:backupRestore: is set while the control stack names "replica-1" as primary and the main host follows it/);
  });
});

describe("without a control stack, a host stack cannot change the primary", () => {
  for (const [key, value] of [["promote", "true"], ["followPrimary", "replica-1"], ["rejoin", "true"]] as const) {
    it(`${key} is refused on a replica stack and on main, with how to create the control stack`, async () => {
      const message = new RegExp(`synaxic:${key}: is no longer read: a host other than main becomes primary only through a control stack, so that two hosts can never both promote\\. Create one \\(\`pulumi stack init <org>/control\`.*pulumi config rm ${key}`);
      await expect(runReplica("replica-2", "10.10.0.4", { extra: { [`synaxic:${key}`]: value } })).rejects.toThrow(message);
      await expect(runMain(2, { [`synaxic:${key}`]: value })).rejects.toThrow(message);
    });
  }
  it("the keys at their defaults (what the engine hands every stack) are not refused: a fleet that never fails over needs no control stack", async () => {
    const run = await runMain(2, { "synaxic:promote": "false", "synaxic:followPrimary": "", "synaxic:rejoin": "false" });
    expect(run.values.postgresMode).toBe("primary");
    expect(run.values.controlStack).toBeUndefined();
  });
});
