/**
 * The main VPS: PostgreSQL primary, Redis master, the app in write mode, the
 * balancer, Prometheus and Grafana, plus the fleet's CAs and passwords. Its
 * outputs are everything a replica stack needs.
 */
import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";
import { LOOPBACK } from "../lib/addresses";
import { ConfigError, sizeToMB, type MainConfig, type StackConfig, type VpsHostConfig } from "../lib/config";
import type { HostContext } from "../lib/hostContext";
import { resolveHetznerHost } from "../lib/hetzner";
import { hostMemoryBudget, memoryBudget } from "../lib/memory";
import { FleetSecrets } from "../components/FleetSecrets";
import { Host } from "../components/Host";
import { Pki, certRequestMismatch } from "../components/Pki";
import { PostgresMaster } from "../components/PostgresMaster";
import { PostgresReplica } from "../components/PostgresReplica";
import * as dockerPkg from "@pulumi/docker";
import { replicaSlotName } from "../templates/postgres-sql";
import { RedisPair, REDIS_USER_NAMES } from "../components/RedisPair";
import { RedisSnapshots } from "../components/RedisSnapshots";
import { SynaxicApp, appOnHost } from "../components/SynaxicApp";
import { NginxBalancer } from "../components/NginxBalancer";
import { Exporters } from "../components/Exporters";
import { Monitoring, alertingArgs } from "../components/Monitoring";
import { mainFirewallRules, monitoredHosts, pkiHost } from "../lib/fleet";
import { renderCertExpiryTextfile } from "../templates/prometheus";
import { PG_ROLES } from "../lib/postgresContainer";
import { EXPORTER_SCRAPE_USER } from "../templates/exporter-web";
import { checkCertRequests, ReplicaStackOutputError, type CertRequests, type FleetInfo, type ReplicaCerts, type ReplicaCredentials } from "../lib/fleetOutputs";
import { fencedAddresses, hostAccessOutputs, readControl } from "./control";
import { ownStack } from "./ownStack";
import { rotationLoweredError } from "../lib/passwordRotation";
import { postgresMajorChangeError } from "../lib/postgresMajor";

/** The main stack on a VPS (Hetzner or an existing server). */
export async function mainStack(config: MainConfig & StackConfig) {
  if (config.host.provider === "local") throw new Error("mainStack: a local stack is built by localStack");
  // Checked against Hetzner's catalogue before anything is declared.
  const vps: VpsHostConfig = config.host.provider === "hetzner" ? await resolveHetznerHost(config.host) : config.host;
  // Under a control stack, the primary's place is its decision, not this stack's.
  const controlled = config.controlStack ? await readControl(config.controlStack, "main", ["main", ...config.replicas.map((r) => r.name)]) : undefined;
  const cfg = {
    ...config,
    host: vps,
    ...(controlled
      ? {
          promote: controlled.role.promote,
          followPrimary: controlled.role.followPrimary,
          rewindAddresses: fencedAddresses(controlled.control, "main", (h) => config.replicas.find((r) => r.name === h)?.privateIp, controlled.rejoined),
        }
      : {}),
  };
  if (cfg.restore && cfg.followPrimary) {
    throw new ConfigError("backupRestore", `is set while the control stack names ${JSON.stringify(cfg.followPrimary)} as primary and the main host follows it; a restore brings back the primary, so restore on the host that is the primary`);
  }
  // A host too small for the fleet is refused before anything is declared.
  hostMemoryBudget("main", vps);
  await checkRotationNotLowered(cfg.passwordRotation);
  await checkPostgresMajorKept(cfg.images.postgres);
  let networkId: pulumi.Output<number> | undefined;
  if (cfg.host.provider === "hetzner") {
    const network = new hcloud.Network("private-network", { name: "synaxic", ipRange: cfg.privateNetworkCidr, labels: { app: "synaxic" } });
    const subnet = new hcloud.NetworkSubnet("private-subnet", {
      networkId: network.id.apply(Number),
      type: "cloud",
      networkZone: cfg.host.networkZone,
      ipRange: cfg.privateNetworkCidr,
    });
    networkId = pulumi.all([network.id, subnet.id]).apply(([id]) => Number(id));
  }

  const host = new Host("main", {
    hostName: "main",
    host: cfg.host,
    privateIp: cfg.privateIp,
    sshPrivateKey: cfg.secrets.sshPrivateKey,
    ...(networkId ? { networkId } : {}),
    protectServer: !cfg.deleteDataOnDestroy,
    firewallRules: mainFirewallRules(cfg),
    commandTimeoutSeconds: cfg.commandTimeoutSeconds,
    ...(cfg.sshIdentityDir ? { identityDir: cfg.sshIdentityDir } : {}),
  });
  // The project's one Hetzner SSH key is registered by this stack's host; replica stacks use it.
  const hetzner: HetznerFacts | null =
    cfg.host.provider === "hetzner" && networkId && host.sshKeyId ? { networkId, networkZone: cfg.host.networkZone, sshKeyId: host.sshKeyId } : null;
  const built = buildMain(cfg, host, hetzner, await readCertFlow(cfg));
  return {
    ...built.outputs,
    ...hostAccessOutputs(host, controlled, built.postgres instanceof PostgresReplica ? built.postgres : undefined),
    balancerUrl: pulumi.interpolate`${cfg.httpsCertificate ? "https" : "http"}://${host.publicAddress}${portSuffix(cfg)}`,
    grafanaTunnel: pulumi.interpolate`ssh -N -p ${host.sshPort} -L ${cfg.ports.grafana}:127.0.0.1:${cfg.ports.grafana} ${host.sshUser}@${host.publicAddress}  # then http://localhost:${cfg.ports.grafana}`,
    prometheusTunnel: pulumi.interpolate`ssh -N -p ${host.sshPort} -L ${cfg.ports.prometheus}:127.0.0.1:${cfg.ports.prometheus} ${host.sshUser}@${host.publicAddress}  # then http://localhost:${cfg.ports.prometheus}`,
  };
}

/**
 * Refuses a passwordRotation counter lower than the one this stack last
 * deployed (its own `passwordRotation` output, read through a reference to
 * itself as the control stack reads its own). Only read when a counter is set.
 */
export async function checkRotationNotLowered(rotation: Readonly<Record<string, number>>): Promise<void> {
  if (Object.keys(rotation).length === 0) return;
  const deployed = (await ownStack("self-rotation").getOutputValue("passwordRotation")) as Record<string, number> | undefined;
  const lowered = rotationLoweredError(deployed ?? {}, rotation);
  if (lowered) throw new ConfigError(lowered.key, lowered.message);
}

/**
 * Refuses a postgresImage of another PostgreSQL major than the one this
 * stack last deployed (its own `fleet` output, which every release has
 * written): see lib/postgresMajor.ts.
 */
export async function checkPostgresMajorKept(postgresImage: string): Promise<void> {
  const fleet = (await ownStack("self-postgres").getOutputValue("fleet")) as { images?: { postgres?: unknown } } | undefined;
  const deployed = typeof fleet?.images?.postgres === "string" ? fleet.images.postgres : undefined;
  const changed = postgresMajorChangeError(deployed, postgresImage);
  if (changed) throw new ConfigError(changed.key, changed.message);
}

/**
 * Where each replica's certificates come from (docs/operations.md#certificates-from-each-replicas-own-keys).
 * A replica whose stack exports certRequests: main signs them, and holds no
 * key of its. One that does not yet, but whose key and certificates this
 * stack made before (its legacyTlsReplicas output, or every replica of its
 * `fleet` output when the stack was last deployed by a version from before
 * certificate requests): main keeps making them, in the secret replicaTls,
 * until the replica's stack publishes its requests. Any other (a new
 * replica): nothing yet; its first `up` publishes its requests.
 *
 * A StackReference to a stack that does not exist fails the program
 * ("unknown stack", pulumi/pulumi pkg/backend/backend.go GetStackOutputs);
 * a stack that exists but was never deployed has no outputs. So each
 * replica's stack must exist before main's `up` lists the replica.
 */
export async function readCertFlow(cfg: Pick<MainConfig, "replicas" | "replicaStacks">): Promise<CertFlow> {
  const requests: Record<string, CertRequests> = {};
  for (const r of cfg.replicas) {
    const stack = replicaStackOf(cfg, r.name);
    const ref = new pulumi.StackReference(`replica-stack-${r.name}`, { name: stack });
    const got = checkCertRequests(stack, await ref.getOutputValue("certRequests"));
    if (!got) continue;
    // The provider signs whatever names a request asks for: main signs a request only for its host's own names.
    for (const [kind, pem] of Object.entries(got) as [keyof CertRequests, string | undefined][]) {
      if (pem === undefined) continue;
      let mismatch: string | undefined;
      try {
        mismatch = certRequestMismatch(pem, pkiHost(r.name, r.privateIp), r.privateIp, kind === "prometheusClient" ? "prometheus" : kind);
      } catch (e) {
        throw new ReplicaStackOutputError(stack, `certRequests.${kind}`, `is refused: ${(e as Error).message}`);
      }
      if (mismatch) {
        throw new ReplicaStackOutputError(
          stack,
          `certRequests.${kind}`,
          `asks for ${mismatch}: this stack's replicas give ${r.name} the address ${r.privateIp}, and main signs a request for that host's names alone (if the address is right here, set the same privateIp on ${stack})`,
        );
      }
    }
    requests[r.name] = got;
  }
  const own = ownStack("self-tls");
  const held = (await own.getOutputValue("legacyTlsReplicas")) as unknown;
  const before = Array.isArray(held) ? held.map(String) : ((await own.getOutputValue("fleet")) as { replicas?: { name: string }[] } | undefined)?.replicas?.map((r) => r.name) ?? [];
  const legacy = cfg.replicas.filter((r) => !requests[r.name] && before.includes(r.name)).map((r) => r.name);
  for (const r of cfg.replicas) {
    if (requests[r.name]) continue;
    const stack = replicaStackOf(cfg, r.name);
    if (legacy.includes(r.name)) {
      pulumi.log.info(`${r.name}: its stack ${stack} exports no certificate requests yet; this stack keeps making its key and certificates (replicaTls) until \`pulumi up -s ${stack}\` publishes them`);
    } else {
      pulumi.log.warn(`${r.name}: its stack ${stack} exports no certificate requests yet, so no certificate is issued for it: run \`pulumi up -s ${stack}\` (it publishes them), then this stack, then ${stack} again`);
    }
  }
  return { requests, legacy };
}

/** A replica's stack: replicaStacks' entry, else <organization>/<project>/<replica name> (as lib/status/outputs.ts replicaStackName names it from main's). */
export function replicaStackOf(cfg: Pick<MainConfig, "replicaStacks">, replicaName: string): string {
  return cfg.replicaStacks[replicaName] ?? `${pulumi.getOrganization()}/${pulumi.getProject()}/${replicaName}`;
}

/** Which replicas main signs requests for, and which it still makes keys for (the legacy flow). */
export interface CertFlow {
  requests: Record<string, CertRequests>;
  legacy: string[];
}

/**
 * Everything that runs on the main host, on any host that provides a
 * HostContext: the fleet's secrets and CA, the primary, the Redis master,
 * the write-mode app, the balancer, monitoring. Returns the stack outputs
 * replica stacks read, and the pieces a local stack hands its replicas.
 */
export function buildMain(
  cfg: MainConfig & StackConfig & {
    /** Under a control stack: the addresses that may rewind against this server (the fenced former primaries). */
    rewindAddresses?: string[];
    /** The app image already built on the host's engine (the local stand-in app); appImage is then its tag. */
    appImageId?: pulumi.Input<string>;
  },
  host: HostContext,
  hetzner: HetznerFacts | null,
  /** Where each replica's certificates come from (readCertFlow); the local stack makes every key itself. */
  certFlow: CertFlow,
) {
  const timeout = cfg.commandTimeoutSeconds;
  // passwordRotation: a raised counter regenerates that password alone (its keepers).
  const secrets = new FleetSecrets("fleet", { rotation: cfg.passwordRotation });
  const pw = secrets.passwords;
  const docker = { providers: [host.dockerProvider] };
  const dockerOpts = { provider: host.dockerProvider };

  // A replica's certificates: signed for its stack's requests, or made here with its key (legacy), or none yet (a new replica).
  const certified = (name: string) => certFlow.requests[name] !== undefined || certFlow.legacy.includes(name);
  const pki = new Pki("pki", {
    hosts: [pkiHost("main", cfg.privateIp), ...cfg.replicas.filter((r) => certified(r.name)).map((r) => pkiHost(r.name, r.privateIp))],
    truststorePassword: pw.truststore,
    // Each Prometheus (this host's, the monitoring replica's) shows the exporters a client certificate.
    prometheusHosts: ["main", ...(cfg.alerting.pair && certified(cfg.alerting.pair.replica) ? [cfg.alerting.pair.replica] : [])],
    requests: certFlow.requests,
  });
  const mainCerts = pki.certs.main!;
  /** Each service's CA certificate: what that service's trust files hold, and nothing else. */
  const casPem = { postgres: pki.cas.postgres.certPem, redis: pki.cas.redis.certPem, metrics: pki.cas.metrics.certPem };

  // One memory budget for the host: every container's limit and every service's sizing come from it.
  const memory = hostMemoryBudget("main", cfg.host);
  const common = { hostName: "main", shell: host.shell, networkMode: host.networkMode, privateIp: cfg.privateIp, timeoutSeconds: timeout, memory };

  // After a failover the main host follows the promoted replica (its old
  // primary data rewound onto the new timeline) until it takes the primary
  // role back with `promote`. The data volume belongs to the stack, so it
  // outlives the switch between the two components.
  const following = cfg.followPrimary ? cfg.replicas.find((r) => r.name === cfg.followPrimary)! : undefined;
  // A restore from the backup repository goes into a fresh volume, named after
  // it; the volume from before stays (retained like any data volume).
  const pgData = new dockerPkg.Volume(
    "postgres-data",
    { name: cfg.restore ? `synaxic-main-pgdata-restore-${cfg.restore.id}` : "synaxic-main-pgdata", labels: [{ label: "app", value: "synaxic" }] },
    { ...dockerOpts, retainOnDelete: !cfg.deleteDataOnDestroy },
  );
  const facts = fleetFacts(cfg, null);
  const pgCommon = {
    ...common,
    image: cfg.images.postgres,
    pgbackrestVersion: cfg.pgbackrestVersion,
    port: cfg.ports.postgres,
    databaseName: cfg.databaseName,
    sizing: { memoryMiB: memory.postgresMiB, cpus: host.cpus, maxConnections: cfg.maxConnections },
    memoryLimitMiB: memory.postgresMiB,
    ...(cfg.backup && cfg.secrets.backup
      ? {
          backup: {
            settings: cfg.backup,
            // The given cipher pass (a stack re-created over an existing repository), else the generated one.
            secrets: { ...cfg.secrets.backup, cipherPass: cfg.secrets.backup.cipherPass ?? pw.backupCipher },
            schedulerMemoryMiB: memory.limitsMiB.backup!,
            serverMemoryMiB: memory.limitsMiB.pgbackrestServer!,
            fleet: [{ name: "main", privateIp: cfg.privateIp }, ...cfg.replicas.map((r) => ({ name: r.name, privateIp: r.privateIp }))],
            primaryName: following?.name ?? "main",
          },
        }
      : {}),
    maxWalSenders: facts.postgres.maxWalSenders,
    maxReplicationSlots: facts.postgres.maxReplicationSlots,
    maxSlotWalKeepSizeMB: facts.maxSlotWalKeepSizeMB,
    walKeepSizeMB: facts.walKeepSizeMB,
    // Named on every server, the primary's commits wait for one of the others (whichever host is primary).
    ...(cfg.synchronousReplication === "any1" ? { synchronousStandbys: cfg.replicas.map((r) => r.name) } : {}),
    tls: { ...mainCerts.postgres, caPem: pki.cas.postgres.certPem },
    volumeName: pgData.name,
  };
  const postgres: PostgresMaster | PostgresReplica = following
    ? new PostgresReplica(
        "postgres",
        {
          ...pgCommon,
          primaryTune: facts.postgres.primaryTune,
          primary: { host: following.privateIp, port: cfg.ports.postgres },
          slotName: replicaSlotName("main"),
          peerAddresses: cfg.replicas.map((r) => r.privateIp),
          ...(cfg.rewindAddresses ? { rewindAddresses: cfg.rewindAddresses } : {}),
          followerSlots: [],
          passwords: { replication: pw.postgresReplication, rewind: pw.postgresRewind },
          promote: false,
          rejoin: true,
          reinitGeneration: 0,
          deleteDataOnDestroy: cfg.deleteDataOnDestroy,
        },
        { ...docker, aliases: [{ type: "synaxic:components:PostgresMaster" }] },
      )
    : new PostgresMaster(
        "postgres",
        {
          ...pgCommon,
          replicas: cfg.replicas,
          ...(cfg.rewindAddresses ? { rewindAddresses: cfg.rewindAddresses } : {}),
          passwords: { app: pw.postgresApp, replication: pw.postgresReplication, rewind: pw.postgresRewind, exporter: pw.postgresExporter },
          promoteFirst: cfg.promote,
          bootstrapGeneration: cfg.bootstrapGeneration,
          ...(cfg.restore ? { restore: cfg.restore } : {}),
        },
        { ...docker, aliases: [{ type: "synaxic:components:PostgresReplica" }] },
      );

  const redis = new RedisPair(
    "redis",
    {
      ...common,
      // Following a promoted replica, or taking the master role back from it.
      role: following || cfg.promote ? "replica" : "master",
      promote: cfg.promote,
      master: { host: following?.privateIp ?? cfg.privateIp, port: cfg.ports.redis },
      image: cfg.images.redis,
      port: cfg.ports.redis,
      tls: { ...mainCerts.redis, caPem: pki.cas.redis.certPem },
      passwords: {
        app: pw.redisApp,
        replication: pw.redisReplication,
        exporter: pw.redisExporter,
        admin: pw.redisAdmin,
        // With Redis snapshots, every host's users.acl has the backup user (a promoted replica's job uses it too).
        ...(cfg.backup?.redis ? { backup: pw.redisBackup } : {}),
      },
      deleteDataOnDestroy: cfg.deleteDataOnDestroy,
    },
    docker,
  );
  // The snapshot job runs beside the Redis master: here, unless this host follows a promoted replica.
  if (cfg.backup?.redis && cfg.secrets.backup && !following) {
    new RedisSnapshots(
      "redis-snapshots",
      {
        hostName: "main",
        shell: host.shell,
        networkMode: host.networkMode,
        timeoutSeconds: timeout,
        redisImage: cfg.images.redis,
        redis: { port: cfg.ports.redis, caPem: pki.cas.redis.certPem, backupPassword: pw.redisBackup },
        repository: cfg.backup.repository,
        snapshots: cfg.backup.redis,
        secrets: { ...cfg.secrets.backup, cipherPass: cfg.secrets.backup.cipherPass ?? pw.backupCipher },
        // Its first snapshot is taken at once: after the backup user is on the running server (RedisPair's users step).
        after: [redis],
      },
      docker,
    );
  }

  const exporters = new Exporters(
    "exporters",
    {
      ...common,
      images: cfg.images,
      ports: cfg.ports,
      caPems: casPem,
      passwords: { postgres: pw.postgresExporter, redis: pw.redisExporter },
      tls: mainCerts.exporters,
      scrapeAuth: { username: EXPORTER_SCRAPE_USER, bcryptHash: secrets.bcryptHashes.exporterScrape },
      certExpiryTextfile: pulumi
        .all([pki.cas.postgres.notAfter, pki.cas.redis.notAfter, pki.cas.metrics.notAfter, mainCerts.postgres.notAfter, mainCerts.redis.notAfter, mainCerts.exporters.notAfter, pki.prometheusClients.main!.notAfter])
        .apply(([pgCa, rdCa, mCa, pg, rd, ex, pc]) =>
          renderCertExpiryTextfile([
            // Every CA: each one's expiry ends its own service's TLS.
            { name: "postgres-ca", notAfter: pgCa },
            { name: "redis-ca", notAfter: rdCa },
            { name: "metrics-ca", notAfter: mCa },
            { name: "main-postgres", notAfter: pg },
            { name: "main-redis", notAfter: rd },
            { name: "main-exporters", notAfter: ex },
            { name: "main-prometheus-client", notAfter: pc },
          ]),
        ),
    },
    // The PostgreSQL exporter logs in as its role and redis_exporter as its user: start them once those have their passwords.
    { ...docker, dependsOn: [postgres instanceof PostgresMaster ? postgres.ready : postgres, redis] },
  );

  const app = new SynaxicApp(
    "app",
    {
      hostName: "main",
      shell: host.shell,
      timeoutSeconds: timeout,
      memory,
      mode: following ? "read" : "write",
      image: cfg.appImage,
      ...(cfg.appImageId ? { imageId: cfg.appImageId } : {}),
      networkMode: host.networkMode,
      privateIp: cfg.privateIp,
      port: cfg.ports.app,
      database: {
        host: LOOPBACK,
        port: cfg.ports.postgres,
        name: cfg.databaseName,
        user: cfg.databaseName,
        password: pw.postgresApp,
        caPem: pki.cas.postgres.certPem,
      },
      redis: {
        masterHost: following?.privateIp ?? cfg.privateIp,
        port: cfg.ports.redis,
        user: REDIS_USER_NAMES.app,
        password: pw.redisApp,
      },
      truststore: { base64: pki.truststoreBase64, password: pw.truststore },
      google: { clientId: cfg.googleClientId, clientSecret: cfg.secrets.googleClientSecret },
    },
    { ...docker, dependsOn: [postgres instanceof PostgresMaster ? postgres.ready : postgres, redis] },
  );

  const balancer = new NginxBalancer(
    "balancer",
    {
      ...common,
      image: cfg.images.nginx,
      httpPort: cfg.ports.http,
      httpsPort: cfg.ports.https,
      concurrency: cfg.balancerConcurrency,
      ...(cfg.balancerRateLimit ? { rateLimit: cfg.balancerRateLimit } : {}),
      routing: cfg.balancerRouting,
      access: cfg.balancerAccess,
      ...(cfg.httpsCertificate && cfg.secrets.httpsPrivateKey ? { https: { certPem: cfg.httpsCertificate, keyPem: cfg.secrets.httpsPrivateKey } } : {}),
      // Writes go to the app next to the primary: this one, or the promoted replica's.
      // Another host's app is listed in both its deploy slots (templates/app.ts).
      mainApp: following ? appOnHost(following.name, following.privateIp, cfg.ports.app) : { name: "main", address: app.endpoint },
      replicaApps: following
        ? [appOnHost("main", cfg.privateIp, cfg.ports.app), ...cfg.replicas.filter((r) => r !== following).map((r) => appOnHost(r.name, r.privateIp, cfg.ports.app))]
        : cfg.replicas.map((r) => appOnHost(r.name, r.privateIp, cfg.ports.app)),
    },
    { ...docker, dependsOn: [app] },
  );
  // The app's previous deploy slot stops once the balancer's reload has moved its requests (templates/app.ts).
  const retired = app.retireOldSlot([balancer]);
  // Only then do the Redis users lose their old passwords (a rotation's two-password window closes).
  redis.syncUsersAfter([retired, exporters]);

  // The replica that runs the second Prometheus and Alertmanager (monitoringReplica).
  const monitoringPeer = cfg.alerting.pair ? cfg.replicas.find((r) => r.name === cfg.alerting.pair!.replica) : undefined;
  const monitoring = new Monitoring(
    "monitoring",
    {
      ...common,
      images: { prometheus: cfg.images.prometheus, grafana: cfg.images.grafana, alertmanager: cfg.alerting.image },
      ports: cfg.ports,
      alerting: alertingArgs(cfg),
      hosts: monitoredHosts(cfg.privateIp, cfg.replicas),
      ...(monitoringPeer ? { pair: { privateIp: cfg.privateIp, peer: monitoringPeer, clusterPort: cfg.alerting.pair!.clusterPort } } : {}),
      replicas: cfg.replicas,
      scrape: { caPem: pki.cas.metrics.certPem, certPem: pki.prometheusClients.main!.certPem, keyPem: pki.prometheusClients.main!.keyPem, username: EXPORTER_SCRAPE_USER, password: pw.exporterScrape },
      grafanaAdminPassword: pw.grafanaAdmin,
      deleteDataOnDestroy: cfg.deleteDataOnDestroy,
    },
    { ...docker, dependsOn: [exporters] },
  );

  // What replica stacks read. Plain facts in `fleet`, the certificates signed
  // for their requests in `replicaCerts`; everything secret in
  // `replicaCredentials` and `replicaTls` (the keys of replicas still on the
  // legacy flow only), which are secret outputs.
  // The app image is exported once this host's app runs it and passed its
  // health check (the container waits for that): replica stacks run the image
  // in this output, so a new image (and the Flyway migration it brings, which
  // a standby cannot run) reaches them only after it is up here. A failed
  // update of main leaves the output at the image that last came up.
  const fleet: pulumi.Output<FleetInfo> = pulumi.output({
    ...fleetFacts(cfg, hetzner),
    appImage: app.container.id.apply(() => cfg.appImage),
    cas: casPem,
  });
  const replicaCredentials: pulumi.Output<ReplicaCredentials> = pulumi.secret({
    postgresApp: pw.postgresApp,
    postgresReplication: pw.postgresReplication,
    postgresRewind: pw.postgresRewind,
    postgresExporter: pw.postgresExporter,
    redisApp: pw.redisApp,
    redisReplication: pw.redisReplication,
    redisExporter: pw.redisExporter,
    redisAdmin: pw.redisAdmin,
    truststorePassword: pw.truststore,
    truststoreBase64: pki.truststoreBase64,
    // Every replica's node and PostgreSQL exporters check the scrape password against its hash.
    exporterScrapeHash: secrets.bcryptHashes.exporterScrape,
    // The monitoring replica's Prometheus scrapes with the password itself.
    ...(cfg.alerting.pair ? { exporterScrapePassword: pw.exporterScrape } : {}),
    // Every host archives into the one repository (a promoted replica's new timeline too).
    ...(cfg.backup && cfg.secrets.backup
      ? { backupCipherPass: cfg.secrets.backup.cipherPass ?? pw.backupCipher, backupAccessKeyId: cfg.secrets.backup.accessKeyId, backupSecretAccessKey: cfg.secrets.backup.secretAccessKey }
      : {}),
    // With Redis snapshots: the backup user's password, for every host's users.acl.
    ...(cfg.backup?.redis ? { redisBackup: pw.redisBackup } : {}),
    // The monitoring replica's Alertmanager notifies the same receivers.
    ...(cfg.alerting.pair ? alertingSecrets(cfg) : {}),
  }) as pulumi.Output<ReplicaCredentials>;
  const replicaTls = pulumi.secret(
    Object.fromEntries(
      certFlow.legacy.map((name) => {
        const c = pki.certs[name]!;
        const pair = (s: { certPem: pulumi.Output<string>; keyPem: pulumi.Output<string>; notAfter: pulumi.Output<string> }) => ({ certPem: s.certPem, keyPem: s.keyPem, notAfter: s.notAfter });
        const client = pki.prometheusClients[name];
        return [
          name,
          {
            postgres: pair(c.postgres),
            redis: pair(c.redis),
            exporters: pair(c.exporters),
            // The monitoring replica's Prometheus: its client certificate for the exporters.
            ...(client ? { prometheusClient: pair(client) } : {}),
          },
        ];
      }),
    ),
  );

  const replicaCerts: Record<string, pulumi.Output<ReplicaCerts[string]>> = Object.fromEntries(Object.entries(pki.signed).map(([name, c]) => [name, pulumi.output(c)]));

  return {
    outputs: {
      fleet,
      replicaCredentials,
      replicaTls,
      replicaCerts,
      // Which replicas replicaTls holds a key for: the next `up` keeps making theirs until their stacks publish requests (readCertFlow).
      legacyTlsReplicas: certFlow.legacy,
      slots: postgres instanceof PostgresMaster ? postgres.slotNames : {},
      postgresMode: postgres instanceof PostgresMaster ? "primary" : postgres.mode,
      grafanaAdminPassword: pw.grafanaAdmin,
      // What checkRotationNotLowered compares the next run's counters with.
      passwordRotation: cfg.passwordRotation,
      // A promoted replica's balancer serves the same certificate: browsers that saw this one's HSTS header accept nothing less.
      ...(cfg.httpsCertificate && cfg.secrets.httpsPrivateKey ? { balancerHttps: pulumi.secret({ certPem: cfg.httpsCertificate, keyPem: cfg.secrets.httpsPrivateKey }) } : {}),
      balancerConfig: balancer.config,
      pgHba: postgres.pgHba,
      prometheusTargets: monitoring.targets,
    },
    cas: casPem,
    certs: pki.certs,
    credentials: replicaCredentials,
    postgres,
  };
}

/** What Hetzner replica stacks use of the main stack's: its private network and the project's SSH key. */
export interface HetznerFacts {
  networkId: pulumi.Input<number>;
  networkZone: string;
  sshKeyId: pulumi.Input<string>;
}

/** The plain facts of the fleet that replica hosts are built from (all but the CA certificate). */
export function fleetFacts(cfg: MainConfig, hetzner: HetznerFacts | null) {
  return {
    version: 1 as const,
    mainPrivateIp: cfg.privateIp,
    privateNetworkCidr: cfg.privateNetworkCidr,
    networkId: hetzner?.networkId ?? null,
    hetzner: hetzner ? { networkZone: hetzner.networkZone, sshKeyId: hetzner.sshKeyId } : null,
    databaseName: cfg.databaseName,
    appImage: cfg.appImage,
    pgbackrestVersion: cfg.pgbackrestVersion,
    backup: cfg.backup,
    // Replicas re-clone when the primary was restored (a new volume per restore).
    restoreId: cfg.restore?.id ?? 0,
    images: cfg.images,
    ports: cfg.ports,
    maxSlotWalKeepSizeMB: sizeToMB(cfg.maxSlotWalKeepSize),
    walKeepSizeMB: sizeToMB(cfg.walKeepSize),
    // Settings a hot standby must have at least as high as its primary: the
    // same on every server, so that any of them can follow any other.
    postgres: {
      primaryTune: { memoryMiB: memoryBudget("main", cfg.host.memoryMiB).postgresMiB, cpus: cfg.host.cpus, maxConnections: cfg.maxConnections },
      maxWalSenders: Math.max(10, cfg.replicas.length * 2 + 2),
      maxReplicationSlots: Math.max(10, cfg.replicas.length + 2),
      synchronousReplication: cfg.synchronousReplication,
    },
    replicas: cfg.replicas,
    monitoring: monitoringFacts(cfg),
    balancerConcurrency: cfg.balancerConcurrency,
    balancerRateLimit: cfg.balancerRateLimit,
    balancerRouting: cfg.balancerRouting,
    balancerAccess: cfg.balancerAccess,
    roles: { replication: PG_ROLES.replication, rewind: PG_ROLES.rewind, exporter: PG_ROLES.exporter, app: cfg.databaseName },
    redisUsers: { ...REDIS_USER_NAMES },
  };
}

/** The monitoring replica and the plain parts of the receivers (fleet.monitoring); null without one. */
export function monitoringFacts(cfg: Pick<MainConfig, "alerting">): FleetInfo["monitoring"] {
  const a = cfg.alerting;
  if (!a.pair) return null;
  return {
    replica: a.pair.replica,
    alertmanagerImage: a.image,
    alertmanagerPort: a.port,
    clusterPort: a.pair.clusterPort,
    ...(a.email ? { email: { ...a.email, to: [...a.email.to] } } : {}),
    ...(a.slack ? { slack: { ...a.slack } } : {}),
    ...(a.webhook ? { webhook: { ...a.webhook } } : {}),
    ...(a.heartbeat ? { heartbeat: { ...a.heartbeat } } : {}),
  };
}

/** The receivers' secrets, for replicaCredentials (only those of receivers that are set). */
function alertingSecrets(cfg: StackConfig): Partial<Record<"alertSmtpPassword" | "alertSlackWebhookUrl" | "alertWebhookUrl" | "alertHeartbeatUrl", pulumi.Output<string>>> {
  const s = cfg.secrets;
  return {
    ...(s.alertSmtpPassword ? { alertSmtpPassword: s.alertSmtpPassword } : {}),
    ...(s.alertSlackWebhookUrl ? { alertSlackWebhookUrl: s.alertSlackWebhookUrl } : {}),
    ...(s.alertWebhookUrl ? { alertWebhookUrl: s.alertWebhookUrl } : {}),
    ...(s.alertHeartbeatUrl ? { alertHeartbeatUrl: s.alertHeartbeatUrl } : {}),
  };
}

function portSuffix(cfg: MainConfig): string {
  if (cfg.httpsCertificate) return cfg.ports.https === 443 ? "" : `:${cfg.ports.https}`;
  return cfg.ports.http === 80 ? "" : `:${cfg.ports.http}`;
}
