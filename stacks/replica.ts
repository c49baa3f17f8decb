/**
 * A replica VPS: PostgreSQL streaming replica, Redis replica over TLS and
 * the app in read mode. Everything it shares with the fleet (addresses,
 * CA, certificates, credentials) comes from the main stack's outputs through
 * a StackReference; secrets stay secret end to end.
 */
import * as pulumi from "@pulumi/pulumi";
import { LOOPBACK } from "../lib/addresses";
import type { ReplicaConfig, StackConfig, VpsHostConfig } from "../lib/config";
import { resolveHetznerHost } from "../lib/hetzner";
import {
  checkCertForOwnKey,
  checkFleetInfo,
  checkMainOutput,
  replicaCertsSchema,
  replicaCredentialsSchema,
  replicaTlsSchema,
  signedForPublished,
  MainStackOutputError,
  type FleetInfo,
  type ReplicaCerts,
  type ReplicaCredentials,
  type ReplicaHostTls,
} from "../lib/fleetOutputs";
import type { HostContext } from "../lib/hostContext";
import { monitoredHosts, pkiHost, replicaFirewallRules } from "../lib/fleet";
import { Monitoring, type AlertingArgs } from "../components/Monitoring";
import { Host } from "../components/Host";
import { PostgresReplica } from "../components/PostgresReplica";
import { RedisPair } from "../components/RedisPair";
import { RedisSnapshots } from "../components/RedisSnapshots";
import { SynaxicApp, appOnHost } from "../components/SynaxicApp";
import { Exporters } from "../components/Exporters";
import { HostKeys } from "../components/HostKeys";
import type { PkiService } from "../components/Pki";
import { NginxBalancer } from "../components/NginxBalancer";
import { ConfigError } from "../lib/config";
import { replicaSlotName } from "../templates/postgres-sql";
import { renderCertExpiryTextfile } from "../templates/prometheus";
import { hostMemoryBudget, memoryBudget } from "../lib/memory";
import { EXPORTER_SCRAPE_USER } from "../templates/exporter-web";
import { fencedAddresses, hostAccessOutputs, readControl } from "./control";
import { ownStack } from "./ownStack";

export async function replicaStack(config: ReplicaConfig & StackConfig) {
  const main = new pulumi.StackReference("main", { name: config.mainStack });

  // The plain facts shape the program (which replicas exist, ports): read
  // them as a value, known at preview too. The secret outputs stay Outputs.
  const fleet = checkFleetInfo(config.mainStack, await main.getOutputValue("fleet"));
  // Under a control stack, whether this host promotes, whom it follows and
  // whether it rewinds are its decision, not this stack's.
  const controlled = config.controlStack ? await readControl(config.controlStack, config.hostName, ["main", ...fleet.replicas.map((r) => r.name)]) : undefined;
  const addressOf = (h: string) => (h === "main" ? fleet.mainPrivateIp : fleet.replicas.find((r) => r.name === h)?.privateIp);
  const cfg = controlled ? { ...config, ...controlled.role, rewindAddresses: fencedAddresses(controlled.control, config.hostName, addressOf, controlled.rejoined) } : config;
  // Secret outputs are checked up front too (a bad one stops the program
  // before anything is declared), then carried only as secret Outputs.
  const secretOutput = async (name: string) => {
    const d = await main.getOutputDetails(name);
    return d.secretValue !== undefined ? d.secretValue : d.value;
  };
  const plainCredentials = checkMainOutput(cfg.mainStack, "replicaCredentials", replicaCredentialsSchema, await secretOutput("replicaCredentials"));
  if (fleet.monitoring?.replica === cfg.replicaName) {
    checkAlertingSecrets(cfg.mainStack, fleet.monitoring, plainCredentials);
    if (!plainCredentials.exporterScrapePassword) {
      throw new MainStackOutputError(cfg.mainStack, "replicaCredentials.exporterScrapePassword", `is missing while fleet.monitoring names this replica (${fleet.monitoring.replica})`);
    }
  }
  if (fleet.backup?.redis && !plainCredentials.redisBackup) {
    throw new MainStackOutputError(cfg.mainStack, "replicaCredentials.redisBackup", "is missing while fleet.backup.redis is set (Redis snapshots): run `pulumi up` on the main stack first");
  }
  const credentials = pulumi.secret(plainCredentials);
  // The key and certificates main made for this replica (the legacy flow), and those it signed for this stack's requests.
  const tlsAll = checkMainOutput(cfg.mainStack, "replicaTls", replicaTlsSchema, await secretOutput("replicaTls"));
  const legacy = tlsAll[cfg.replicaName];
  const signedAll = checkMainOutput(cfg.mainStack, "replicaCerts", replicaCertsSchema, (await main.getOutputValue("replicaCerts")) ?? {});
  // What this stack published at its last `up` (nothing on a new stack): main's certificates count only for those requests' keys.
  const self = ownStack("self-certs");
  const offered = signedAll[cfg.replicaName];
  const signed = offered ? signedForPublished(cfg.mainStack, cfg.replicaName, offered, await self.getOutputValue("certRequests"), (await self.getOutputValue("tlsSource")) === "own-keys") : undefined;
  if (offered && !signed) {
    pulumi.log.warn(`${cfg.replicaName}: main's certificates for it are for keys of requests this stack has not published (it is new, or was made again): it publishes its own now`);
  }
  const https = await secretOutput("balancerHttps");
  if (https !== undefined && (typeof https?.certPem !== "string" || typeof https?.keyPem !== "string")) {
    throw new MainStackOutputError(cfg.mainStack, "balancerHttps", "is malformed: expected a certificate and key");
  }
  const balancerHttps = https === undefined ? undefined : pulumi.secret(https as { certPem: string; keyPem: string });

  const me = fleet.replicas.find((r) => r.name === cfg.replicaName);
  if (!me) {
    throw new MainStackOutputError(
      cfg.mainStack,
      "fleet.replicas",
      `has no replica named "${cfg.replicaName}": add "${cfg.replicaName}=${cfg.privateIp}" to the main stack's replicas and run \`pulumi up\` there, before this stack`,
    );
  }
  if (me.privateIp !== cfg.privateIp) {
    throw new MainStackOutputError(cfg.mainStack, "fleet.replicas", `lists ${cfg.replicaName} at ${me.privateIp}, but this stack's privateIp is ${cfg.privateIp}: make them agree`);
  }
  if (cfg.host.provider === "local") throw new Error("replicaStack: local replicas are built by localStack");
  // Checked before any resource is declared.
  primaryOf(cfg, fleet);
  const monitoringHere = fleet.monitoring?.replica === me.name;
  if (monitoringHere && !signed && legacy && !legacy.prometheusClient) {
    throw new MainStackOutputError(cfg.mainStack, `replicaTls.${cfg.replicaName}.prometheusClient`, `is missing while fleet.monitoring names this replica (${cfg.replicaName})`);
  }
  const tlsSource = signed ? "own-keys" : legacy ? "legacy" : "pending";
  if (tlsSource === "legacy") {
    pulumi.log.warn(
      `${me.name} runs with the key and certificates the main stack made for it (replicaTls), until main has signed this stack's certificate requests: run \`pulumi up\` on ${cfg.mainStack}, then on this stack again (its PostgreSQL, Redis and exporters restart once, on their own keys)`,
    );
  } else if (tlsSource === "pending") {
    pulumi.log.warn(
      `${me.name} has no certificates yet: this \`up\` deploys the host and publishes its certificate requests (certRequests), and no service. Run \`pulumi up\` on ${cfg.mainStack} (it signs them), then on this stack again`,
    );
  }
  const skipMonitoring = monitoringHere && signed !== undefined && !signed.prometheusClient;
  if (skipMonitoring) {
    pulumi.log.warn(`${me.name} is the monitoring replica, and main has not signed its Prometheus client request yet: its Prometheus and Alertmanager wait. Run \`pulumi up\` on ${cfg.mainStack}, then on this stack again`);
  }
  let vps: VpsHostConfig = cfg.host;
  let hetzner: { networkId: number; sshKeyId: string } | undefined;
  if (cfg.host.provider === "hetzner") {
    // The private network and the project's SSH key are the main stack's:
    // Hetzner refuses a second key with the same fingerprint.
    if (!fleet.hetzner || fleet.networkId === null) {
      throw new ConfigError(
        "hostProvider",
        `got "hetzner", but the main stack ${cfg.mainStack} is not on Hetzner: a Hetzner replica joins the main stack's Hetzner private network. Use hostProvider "existing" for this host, or a main stack on Hetzner`,
      );
    }
    const resolved = await resolveHetznerHost(cfg.host);
    if (resolved.networkZone !== fleet.hetzner.networkZone) {
      throw new ConfigError(
        "location",
        `got ${JSON.stringify(cfg.host.location)}, in network zone ${resolved.networkZone}; the main stack's private network is in ${fleet.hetzner.networkZone}, and a server joins only a network of its own zone. Choose a location in ${fleet.hetzner.networkZone}`,
      );
    }
    vps = resolved;
    hetzner = { networkId: fleet.networkId, sshKeyId: fleet.hetzner.sshKeyId };
  }
  // A host too small for the fleet is refused before anything is declared.
  hostMemoryBudget(hostKind(fleet, me.name), vps);
  // This replica's own keys, and the requests main signs (exported as certRequests): its keys never leave this stack.
  const keys = new HostKeys("pki", { host: pkiHost(me.name, cfg.privateIp), prometheusClient: monitoringHere });
  const myTls = signed ? ownKeyTls(cfg.mainStack, me.name, keys, signed) : legacy ? pulumi.secret(legacy) : undefined;
  const host = new Host(cfg.hostName, {
    hostName: cfg.hostName,
    host: vps,
    privateIp: cfg.privateIp,
    sshPrivateKey: cfg.secrets.sshPrivateKey,
    ...(hetzner ? { networkId: hetzner.networkId, sshKeyId: hetzner.sshKeyId } : {}),
    protectServer: !cfg.deleteDataOnDestroy,
    firewallRules: replicaFirewallRules({
      adminCidrs: cfg.adminCidrs,
      mainIp: fleet.mainPrivateIp,
      peers: fleet.replicas,
      self: me.name,
      ports: fleet.ports,
      balancer: cfg.promote,
      https: cfg.promote && balancerHttps !== undefined,
      backup: fleet.backup !== null,
      monitoring: fleet.monitoring ? { replica: fleet.monitoring.replica, alertmanagerPort: fleet.monitoring.alertmanagerPort, clusterPort: fleet.monitoring.clusterPort } : null,
    }),
    commandTimeoutSeconds: cfg.commandTimeoutSeconds,
    ...(cfg.sshIdentityDir ? { identityDir: cfg.sshIdentityDir } : {}),
  });
  const certRequests = keys.requests;
  if (!myTls) {
    // A new replica: nothing that needs a certificate is declared; what it exports lets main sign its requests.
    return { replicaName: me.name, privateIp: cfg.privateIp, tlsSource, awaitingMain: true, certRequests, ...hostAccessOutputs(host, controlled) };
  }
  const built = buildReplica({ ...cfg, skipMonitoring }, fleet, fleet.cas, me, credentials, myTls, host, "", [], balancerHttps);
  const { postgres, ...outputs } = built;
  // Resolved once the certificates are checked against this stack's keys: a mismatch fails the `up` with its message.
  const checkedSource = pulumi.unsecret(myTls.apply(() => tlsSource));
  // Something here waits for main's next `up` to sign this stack's requests (`fleet up` runs main and this stack again).
  const awaitingMain = tlsSource !== "own-keys" || skipMonitoring;
  return { ...outputs, tlsSource: checkedSource, awaitingMain, certRequests, ...hostAccessOutputs(host, controlled, postgres) };
}

/**
 * This replica's certificates from main's replicaCerts with its own keys,
 * secret, each checked first to be for its own key (checkCertForOwnKey).
 */
export function ownKeyTls(mainStack: string, replicaName: string, keys: HostKeys, signed: ReplicaCerts[string]): pulumi.Output<ReplicaHostTls> {
  return pulumi.secret(
    pulumi.all([keys.keyPems.postgres, keys.keyPems.redis, keys.keyPems.exporters, keys.keyPems.prometheusClient]).apply(([pg, rd, ex, pc]) => {
      const pair = (kind: string, c: { certPem: string; notAfter: string }, keyPem: string) => {
        checkCertForOwnKey(mainStack, replicaName, kind, c.certPem, keyPem);
        return { certPem: c.certPem, keyPem, notAfter: c.notAfter };
      };
      return {
        postgres: pair("postgres", signed.postgres, pg),
        redis: pair("redis", signed.redis, rd),
        exporters: pair("exporters", signed.exporters, ex),
        ...(signed.prometheusClient && pc ? { prometheusClient: pair("prometheusClient", signed.prometheusClient, pc) } : {}),
      };
    }),
  );
}

/** What a replica host needs from its own stack configuration. */
export type ReplicaSettings = Pick<
  ReplicaConfig,
  "hostName" | "privateIp" | "promote" | "followPrimary" | "rejoin" | "reinitGeneration" | "maxConnections" | "deleteDataOnDestroy" | "commandTimeoutSeconds" | "googleClientId"
> & {
  secrets: Pick<StackConfig["secrets"], "googleClientSecret">;
  /** Under a control stack: the addresses that may rewind against this server (the fenced former primaries). */
  rewindAddresses?: string[];
  /** The app image already built on the host's engine (the local stand-in app): run instead of pulling fleet.appImage. */
  appImageId?: pulumi.Input<string>;
  /** The monitoring replica whose Prometheus client certificate main has not signed yet: its Prometheus and Alertmanager wait. */
  skipMonitoring?: boolean;
};

/** The server a replica follows: the main host, or after a failover the promoted replica named in followPrimary. */
export function primaryOf(cfg: Pick<ReplicaSettings, "followPrimary">, fleet: Pick<FleetInfo, "mainPrivateIp" | "replicas">): { name: string; privateIp: string } {
  if (!cfg.followPrimary) return { name: "main", privateIp: fleet.mainPrivateIp };
  const p = fleet.replicas.find((r) => r.name === cfg.followPrimary);
  if (!p) {
    throw new ConfigError("followPrimary", `got ${JSON.stringify(cfg.followPrimary)}; expected one of the main stack's replicas (${fleet.replicas.map((r) => r.name).join(", ") || "none"})`);
  }
  return p;
}

/**
 * Everything that runs on a replica host, on any host that provides a
 * HostContext. `prefix` keeps resource names apart when several hosts
 * share one stack (the local stack).
 */
export function buildReplica(
  cfg: ReplicaSettings,
  fleet: Omit<FleetInfo, "cas" | "networkId" | "hetzner">,
  /** Each service's CA certificate (main's fleet.cas): every trust file holds its own service's CA only. */
  cas: Record<PkiService, pulumi.Input<string>>,
  me: { name: string; privateIp: string; slotName: string },
  credentials: pulumi.Output<ReplicaCredentials>,
  tls: pulumi.Output<ReplicaHostTls>,
  host: HostContext,
  prefix: string,
  /** The primary, when it is declared in the same stack (the local fleet): the replica starts after its roles and slots. */
  after: pulumi.Resource[] = [],
  /** The main host's HTTPS certificate and key: a promoted replica's balancer serves them. */
  balancerHttps?: pulumi.Output<{ certPem: string; keyPem: string }>,
) {
  const timeout = cfg.commandTimeoutSeconds;
  const primary = primaryOf(cfg, fleet);
  // Everyone else in the fleet: they follow this server once it is promoted.
  const others = [{ name: "main", privateIp: fleet.mainPrivateIp }, ...fleet.replicas].filter((r) => r.name !== me.name);
  const secretField = (k: Exclude<keyof ReplicaCredentials, OptionalCredential>) => pulumi.secret(credentials.apply((c) => c[k]));
  const ports = fleet.ports;
  const docker = { providers: [host.dockerProvider] };
  // One memory budget for the host: every container's limit and every service's sizing come from it.
  const memory = memoryBudget(hostKind(fleet, me.name), host.memoryMiB);
  const common = { hostName: cfg.hostName, shell: host.shell, networkMode: host.networkMode, privateIp: cfg.privateIp, timeoutSeconds: timeout, memory };
  const pgTls = { certPem: tls.apply((t) => t.postgres.certPem), keyPem: pulumi.secret(tls.apply((t) => t.postgres.keyPem)), caPem: cas.postgres };
  const redisTls = { certPem: tls.apply((t) => t.redis.certPem), keyPem: pulumi.secret(tls.apply((t) => t.redis.keyPem)), caPem: cas.redis };

  const postgres = new PostgresReplica(
    `${prefix}postgres`,
    {
      ...common,
      image: fleet.images.postgres,
      pgbackrestVersion: fleet.pgbackrestVersion,
      port: ports.postgres,
      databaseName: fleet.databaseName,
      sizing: { memoryMiB: memory.postgresMiB, cpus: host.cpus, maxConnections: fleet.postgres.primaryTune.maxConnections },
      memoryLimitMiB: memory.postgresMiB,
      primaryTune: fleet.postgres.primaryTune,
      maxWalSenders: fleet.postgres.maxWalSenders,
      maxReplicationSlots: fleet.postgres.maxReplicationSlots,
      maxSlotWalKeepSizeMB: fleet.maxSlotWalKeepSizeMB,
      walKeepSizeMB: fleet.walKeepSizeMB,
      // Once promoted, this server's commits wait for one of the others (synchronousReplication any1).
      ...(fleet.postgres.synchronousReplication === "any1" ? { synchronousStandbys: others.map((r) => r.name) } : {}),
      after,
      primary: { host: primary.privateIp, port: ports.postgres },
      slotName: me.slotName,
      peerAddresses: others.map((r) => r.privateIp),
      ...(cfg.rewindAddresses ? { rewindAddresses: cfg.rewindAddresses } : {}),
      followerSlots: others.map((r) => ({ name: r.name, slotName: replicaSlotName(r.name) })),
      rejoin: cfg.rejoin,
      tls: pgTls,
      passwords: { replication: secretField("postgresReplication"), rewind: secretField("postgresRewind") },
      promote: cfg.promote,
      reinitGeneration: cfg.reinitGeneration,
      restoreId: fleet.restoreId,
      deleteDataOnDestroy: cfg.deleteDataOnDestroy,
      ...(fleet.backup
        ? {
            backup: {
              settings: fleet.backup,
              secrets: backupSecrets("main", credentials),
              schedulerMemoryMiB: memory.limitsMiB.backup!,
              serverMemoryMiB: memory.limitsMiB.pgbackrestServer!,
              fleet: [{ name: "main", privateIp: fleet.mainPrivateIp }, ...fleet.replicas.map((r) => ({ name: r.name, privateIp: r.privateIp }))],
              primaryName: cfg.promote ? me.name : primary.name,
            },
          }
        : {}),
    },
    docker,
  );

  // With Redis snapshots, the backup user is in this host's users.acl too.
  const redisBackupPassword = fleet.backup?.redis
    ? pulumi.secret(
        credentials.apply((c) => {
          if (!c.redisBackup) throw new MainStackOutputError("main", "replicaCredentials.redisBackup", "is missing while fleet.backup.redis is set");
          return c.redisBackup;
        }),
      )
    : undefined;
  const redis = new RedisPair(
    `${prefix}redis`,
    {
      ...common,
      role: "replica",
      promote: cfg.promote,
      master: { host: primary.privateIp, port: ports.redis },
      image: fleet.images.redis,
      port: ports.redis,
      tls: redisTls,
      passwords: {
        app: secretField("redisApp"),
        replication: secretField("redisReplication"),
        exporter: secretField("redisExporter"),
        admin: secretField("redisAdmin"),
        ...(redisBackupPassword ? { backup: redisBackupPassword } : {}),
      },
      deleteDataOnDestroy: cfg.deleteDataOnDestroy,
    },
    docker,
  );
  // A promoted replica's Redis is the master: the snapshot job runs beside it.
  if (fleet.backup?.redis && redisBackupPassword && cfg.promote) {
    new RedisSnapshots(
      `${prefix}redis-snapshots`,
      {
        hostName: cfg.hostName,
        shell: host.shell,
        networkMode: host.networkMode,
        timeoutSeconds: timeout,
        redisImage: fleet.images.redis,
        redis: { port: ports.redis, caPem: cas.redis, backupPassword: redisBackupPassword },
        repository: fleet.backup.repository,
        snapshots: fleet.backup.redis,
        secrets: backupSecrets("main", credentials),
        // Its first snapshot is taken at once: after the backup user is on the running server (RedisPair's users step).
        after: [redis],
      },
      docker,
    );
  }

  const exporters = new Exporters(
    `${prefix}exporters`,
    {
      ...common,
      images: fleet.images,
      ports,
      caPems: cas,
      passwords: { postgres: secretField("postgresExporter"), redis: secretField("redisExporter") },
      tls: { certPem: tls.apply((t) => t.exporters.certPem), keyPem: pulumi.secret(tls.apply((t) => t.exporters.keyPem)) },
      scrapeAuth: { username: EXPORTER_SCRAPE_USER, bcryptHash: secretField("exporterScrapeHash") },
      certExpiryTextfile: tls.apply((t) =>
        renderCertExpiryTextfile([
          { name: `${cfg.hostName}-postgres`, notAfter: t.postgres.notAfter },
          { name: `${cfg.hostName}-redis`, notAfter: t.redis.notAfter },
          { name: `${cfg.hostName}-exporters`, notAfter: t.exporters.notAfter },
          ...(t.prometheusClient ? [{ name: `${cfg.hostName}-prometheus-client`, notAfter: t.prometheusClient.notAfter }] : []),
        ]),
      ),
    },
    // The PostgreSQL exporter logs in as its role: start it once this server has it (a streaming standby).
    { ...docker, dependsOn: [postgres, redis] },
  );

  const writeMode = cfg.promote;
  const app = new SynaxicApp(
    `${prefix}app`,
    {
      hostName: cfg.hostName,
      shell: host.shell,
      timeoutSeconds: timeout,
      memory,
      mode: writeMode ? "write" : "read",
      image: fleet.appImage,
      ...(cfg.appImageId ? { imageId: cfg.appImageId } : {}),
      networkMode: host.networkMode,
      privateIp: cfg.privateIp,
      port: ports.app,
      database: {
        host: LOOPBACK,
        port: ports.postgres,
        name: fleet.databaseName,
        user: fleet.roles.app,
        password: secretField("postgresApp"),
        caPem: cas.postgres,
      },
      // The app uses one Redis server for everything, in read mode too: the
      // primary host's master (this host's own when it is the primary).
      redis: { masterHost: writeMode ? cfg.privateIp : primary.privateIp, port: ports.redis, user: fleet.redisUsers.app, password: secretField("redisApp") },
      truststore: { base64: secretField("truststoreBase64"), password: secretField("truststorePassword") },
      google: { clientId: cfg.googleClientId, clientSecret: cfg.secrets.googleClientSecret },
    },
    { ...docker, dependsOn: [postgres, redis] },
  );

  // A promoted replica is the fleet's entry point now: it runs the balancer,
  // writes to itself, reads spread over every other app still answering.
  let balancer: NginxBalancer | undefined;
  if (cfg.promote) {
    balancer = new NginxBalancer(
      `${prefix}balancer`,
      {
        ...common,
        image: fleet.images.nginx,
        httpPort: ports.http,
        httpsPort: ports.https,
        ...(fleet.balancerConcurrency !== undefined ? { concurrency: fleet.balancerConcurrency } : {}),
        ...(fleet.balancerRateLimit ? { rateLimit: fleet.balancerRateLimit } : {}),
        ...(fleet.balancerRouting ? { routing: fleet.balancerRouting } : {}),
        ...(fleet.balancerAccess ? { access: fleet.balancerAccess } : {}),
        ...(balancerHttps ? { https: { certPem: balancerHttps.apply((h) => h.certPem), keyPem: balancerHttps.apply((h) => h.keyPem) } } : {}),
        mainApp: { name: me.name, address: app.endpoint },
        replicaApps: others.map((r) => appOnHost(r.name, r.privateIp, ports.app)),
      },
      { ...docker, dependsOn: [app] },
    );
  }
  // The app's previous deploy slot stops once nothing on this host sends it
  // requests: after this host's balancer reload when it runs one; balancers
  // elsewhere list both slots (templates/app.ts).
  const retired = app.retireOldSlot(balancer ? [balancer] : []);
  // This host's Redis users drop old passwords only after its old app slot is gone (templates/redis-users.ts).
  redis.syncUsersAfter([retired, exporters]);

  // The monitoring replica: a second Prometheus on the same targets with the
  // same rules, and an Alertmanager clustered with main's. No Grafana.
  const mon = fleet.monitoring;
  if (mon && mon.replica === me.name && !cfg.skipMonitoring) {
    new Monitoring(
      `${prefix}monitoring`,
      {
        ...common,
        role: "replica",
        images: { prometheus: fleet.images.prometheus, grafana: fleet.images.grafana, alertmanager: mon.alertmanagerImage },
        ports: ports,
        hosts: monitoredHosts(fleet.mainPrivateIp, fleet.replicas),
        replicas: fleet.replicas,
        alerting: monitoringAlerting(mon, credentials),
        scrape: monitoringScrape(tls, credentials, cas.metrics),
        pair: { privateIp: cfg.privateIp, peer: { name: "main", privateIp: fleet.mainPrivateIp }, clusterPort: mon.clusterPort },
        deleteDataOnDestroy: cfg.deleteDataOnDestroy,
      },
      // Its own exporters are among its targets.
      { ...docker, dependsOn: [exporters] },
    );
  }

  return {
    replicaName: me.name,
    slotName: me.slotName,
    primary: cfg.promote ? "self" : `${primary.name} ${primary.privateIp}:${ports.postgres}`,
    postgresMode: postgres.mode,
    postgresVolume: postgres.volumeName,
    redisRole: redis.role,
    appMode: writeMode ? "write" : "read",
    privateIp: cfg.privateIp,
    pgHba: postgres.pgHba,
    /** The component itself, for the stack's own outputs (not an output). */
    postgres,
  };
}

/** Credentials only some fleets have: the backup repository's, the receivers' and scrape password of a monitoring replica. */
type OptionalCredential = "exporterScrapePassword" | "backupCipherPass" | "backupAccessKeyId" | "backupSecretAccessKey" | "redisBackup" | "alertSmtpPassword" | "alertSlackWebhookUrl" | "alertWebhookUrl" | "alertHeartbeatUrl";

/** The memory budget's kind of this replica: the monitoring replica runs Prometheus and Alertmanager besides. */
export function hostKind(fleet: Pick<FleetInfo, "monitoring">, replicaName: string): "replica" | "monitoringReplica" {
  return fleet.monitoring?.replica === replicaName ? "monitoringReplica" : "replica";
}

/** The receivers' secrets the monitoring replica needs: each one whose receiver is set, or an error naming it (never its value). */
export function checkAlertingSecrets(mainStack: string, mon: NonNullable<FleetInfo["monitoring"]>, c: ReplicaCredentials): void {
  const need: [boolean, keyof ReplicaCredentials][] = [
    [!!mon.email?.username, "alertSmtpPassword"],
    [!!mon.slack, "alertSlackWebhookUrl"],
    [!!mon.webhook, "alertWebhookUrl"],
    [!!mon.heartbeat, "alertHeartbeatUrl"],
  ];
  for (const [set, k] of need) {
    if (set && !c[k]) throw new MainStackOutputError(mainStack, `replicaCredentials.${k}`, `is missing while fleet.monitoring names this replica (${mon.replica}) with that receiver`);
  }
}

/**
 * The monitoring replica's receivers: the main stack's settings (fleet.monitoring)
 * with their secrets from replicaCredentials, each required when its receiver
 * is set, and kept secret.
 */
export function monitoringAlerting(mon: NonNullable<FleetInfo["monitoring"]>, credentials: pulumi.Output<ReplicaCredentials>): AlertingArgs {
  const field = (k: "alertSmtpPassword" | "alertSlackWebhookUrl" | "alertWebhookUrl" | "alertHeartbeatUrl") =>
    pulumi.secret(
      credentials.apply((c) => {
        const v = c[k];
        if (!v) throw new MainStackOutputError("main", `replicaCredentials.${k}`, `is missing while fleet.monitoring names this replica with that receiver`);
        return v;
      }),
    );
  return {
    port: mon.alertmanagerPort,
    ...(mon.email ? { email: { ...mon.email, ...(mon.email.username ? { password: field("alertSmtpPassword") } : {}) } } : {}),
    ...(mon.slack ? { slack: { ...mon.slack, webhookUrl: field("alertSlackWebhookUrl") } } : {}),
    ...(mon.webhook ? { webhook: { ...mon.webhook, url: field("alertWebhookUrl") } } : {}),
    ...(mon.heartbeat ? { heartbeat: { ...mon.heartbeat, url: field("alertHeartbeatUrl") } } : {}),
  };
}

/** The monitoring replica's Prometheus: its client certificate from replicaTls and the scrape password from replicaCredentials, secret. */
function monitoringScrape(tls: pulumi.Output<ReplicaHostTls>, credentials: pulumi.Output<ReplicaCredentials>, caPem: pulumi.Input<string>) {
  const need = <T>(v: T | undefined, output: string): T => {
    if (v === undefined) throw new MainStackOutputError("main", output, "is missing while fleet.monitoring names this replica");
    return v;
  };
  return {
    caPem,
    certPem: tls.apply((t) => need(t.prometheusClient, "replicaTls.prometheusClient").certPem),
    keyPem: pulumi.secret(tls.apply((t) => need(t.prometheusClient, "replicaTls.prometheusClient").keyPem)),
    username: EXPORTER_SCRAPE_USER,
    password: pulumi.secret(credentials.apply((c) => need(c.exporterScrapePassword, "replicaCredentials.exporterScrapePassword"))),
  };
}

/** With backups on: the repository's secrets from the main stack's replicaCredentials, each required. */
function backupSecrets(mainStack: string, credentials: pulumi.Output<ReplicaCredentials>) {
  const field = (k: "backupCipherPass" | "backupAccessKeyId" | "backupSecretAccessKey") =>
    pulumi.secret(
      credentials.apply((c) => {
        const v = c[k];
        if (!v) throw new MainStackOutputError(mainStack, `replicaCredentials.${k}`, "is missing while fleet.backup is set");
        return v;
      }),
    );
  return { cipherPass: field("backupCipherPass"), accessKeyId: field("backupAccessKeyId"), secretAccessKey: field("backupSecretAccessKey") };
}
