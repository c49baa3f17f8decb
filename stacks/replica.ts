/**
 * A replica VPS: PostgreSQL streaming replica, Redis replica over TLS and
 * the app in read mode. Everything it shares with the fleet (addresses,
 * CA, certificates, credentials) comes from the main stack's outputs through
 * a StackReference; secrets stay secret end to end.
 */
import * as pulumi from "@pulumi/pulumi";
import { LOOPBACK } from "../lib/addresses";
import type { ReplicaConfig, StackConfig } from "../lib/config";
import { checkMainOutput, fleetInfoSchema, replicaCredentialsSchema, replicaTlsSchema, MainStackOutputError } from "../lib/fleetOutputs";
import { replicaFirewallRules } from "../lib/fleet";
import { Host } from "../components/Host";
import { PostgresReplica } from "../components/PostgresReplica";
import { RedisPair } from "../components/RedisPair";
import { SynaxicApp } from "../components/SynaxicApp";
import { Exporters } from "../components/Exporters";
import { renderCertExpiryTextfile } from "../templates/prometheus";

export async function replicaStack(cfg: ReplicaConfig & StackConfig) {
  const timeout = cfg.commandTimeoutSeconds;
  const main = new pulumi.StackReference("main", { name: cfg.mainStack });

  // The plain facts shape the program (which replicas exist, ports): read
  // them as a value, known at preview too. The secret outputs stay Outputs.
  const fleet = checkMainOutput(cfg.mainStack, "fleet", fleetInfoSchema, await main.getOutputValue("fleet"));
  // Secret outputs are checked up front too (a bad one stops the program
  // before anything is declared), then carried only as secret Outputs.
  const secretOutput = async (name: string) => {
    const d = await main.getOutputDetails(name);
    return d.secretValue !== undefined ? d.secretValue : d.value;
  };
  const credentials = pulumi.secret(checkMainOutput(cfg.mainStack, "replicaCredentials", replicaCredentialsSchema, await secretOutput("replicaCredentials")));
  const tlsAll = checkMainOutput(cfg.mainStack, "replicaTls", replicaTlsSchema, await secretOutput("replicaTls"));
  const mine = tlsAll[cfg.replicaName];
  if (!mine) {
    throw new MainStackOutputError(cfg.mainStack, `replicaTls.${cfg.replicaName}`, `is missing: add "${cfg.replicaName}=${cfg.privateIp}" to the main stack's replicas and run \`pulumi up\` there`);
  }
  const myTls = pulumi.secret(mine);

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
  return build(cfg, fleet, me, credentials, myTls, timeout);
}

function build(
  cfg: ReplicaConfig & StackConfig,
  fleet: ReturnType<typeof fleetInfoSchema.parse>,
  me: { name: string; privateIp: string; slotName: string },
  credentials: pulumi.Output<ReturnType<typeof replicaCredentialsSchema.parse>>,
  tls: pulumi.Output<{ postgres: { certPem: string; keyPem: string; notAfter: string }; redis: { certPem: string; keyPem: string; notAfter: string } }>,
  timeout: number,
) {
  const secretField = (k: keyof ReturnType<typeof replicaCredentialsSchema.parse>) => pulumi.secret(credentials.apply((c) => c[k]));
  const ports = fleet.ports;

  const host = new Host(cfg.hostName, {
    hostName: cfg.hostName,
    host: cfg.host,
    privateIp: cfg.privateIp,
    sshPrivateKey: cfg.secrets.sshPrivateKey,
    ...(cfg.host.provider === "hetzner" && fleet.networkId !== null ? { networkId: fleet.networkId } : {}),
    firewallRules: replicaFirewallRules({ adminCidrs: cfg.adminCidrs, mainIp: fleet.mainPrivateIp, peers: fleet.replicas, self: me.name, ports }),
    commandTimeoutSeconds: timeout,
  });
  const docker = { providers: [host.dockerProvider] };
  const common = { hostName: cfg.hostName, shell: host.shell, networkMode: host.networkMode, privateIp: cfg.privateIp, timeoutSeconds: timeout };
  const pgTls = { certPem: tls.apply((t) => t.postgres.certPem), keyPem: pulumi.secret(tls.apply((t) => t.postgres.keyPem)), caPem: fleet.caCertPem };
  const redisTls = { certPem: tls.apply((t) => t.redis.certPem), keyPem: pulumi.secret(tls.apply((t) => t.redis.keyPem)), caPem: fleet.caCertPem };

  const postgres = new PostgresReplica(
    "postgres",
    {
      ...common,
      image: fleet.images.postgres,
      port: ports.postgres,
      databaseName: fleet.databaseName,
      sizing: { memoryMiB: cfg.host.memoryMiB, cpus: cfg.host.cpus, maxConnections: cfg.maxConnections },
      maxSlotWalKeepSizeMB: fleet.maxSlotWalKeepSizeMB,
      walKeepSizeMB: fleet.walKeepSizeMB,
      primary: { host: fleet.mainPrivateIp, port: ports.postgres },
      slotName: me.slotName,
      peerAddresses: [fleet.mainPrivateIp, ...fleet.replicas.filter((r) => r.name !== me.name).map((r) => r.privateIp)],
      tls: pgTls,
      passwords: { replication: secretField("postgresReplication"), rewind: secretField("postgresRewind") },
      promote: cfg.promote,
      reinitGeneration: cfg.reinitGeneration,
      deleteDataOnDestroy: cfg.deleteDataOnDestroy,
    },
    docker,
  );

  const redis = new RedisPair(
    "redis",
    {
      ...common,
      role: "replica",
      promote: cfg.promote,
      master: { host: fleet.mainPrivateIp, port: ports.redis },
      image: fleet.images.redis,
      port: ports.redis,
      tls: redisTls,
      passwords: { app: secretField("redisApp"), replication: secretField("redisReplication"), exporter: secretField("redisExporter"), admin: secretField("redisAdmin") },
      deleteDataOnDestroy: cfg.deleteDataOnDestroy,
    },
    docker,
  );

  new Exporters(
    "exporters",
    {
      ...common,
      images: fleet.images,
      ports,
      caPem: fleet.caCertPem,
      passwords: { postgres: secretField("postgresExporter"), redis: secretField("redisExporter") },
      certExpiryTextfile: tls.apply((t) =>
        renderCertExpiryTextfile([
          { name: `${cfg.hostName}-postgres`, notAfter: t.postgres.notAfter },
          { name: `${cfg.hostName}-redis`, notAfter: t.redis.notAfter },
        ]),
      ),
    },
    docker,
  );

  const writeMode = cfg.promote;
  new SynaxicApp(
    "app",
    {
      hostName: cfg.hostName,
      mode: writeMode ? "write" : "read",
      image: fleet.appImage,
      networkMode: host.networkMode,
      privateIp: cfg.privateIp,
      port: ports.app,
      database: {
        host: LOOPBACK,
        port: ports.postgres,
        name: fleet.databaseName,
        user: fleet.roles.app,
        password: secretField("postgresApp"),
        caPem: fleet.caCertPem,
      },
      redis: writeMode
        ? { masterHost: cfg.privateIp, port: ports.redis, replicaHosts: [], user: fleet.redisUsers.app, password: secretField("redisApp") }
        : {
            masterHost: fleet.mainPrivateIp,
            port: ports.redis,
            replicaHost: cfg.privateIp,
            replicaHosts: [cfg.privateIp],
            user: fleet.redisUsers.app,
            password: secretField("redisApp"),
          },
      truststore: { base64: secretField("truststoreBase64"), password: secretField("truststorePassword") },
      google: { clientId: cfg.googleClientId, clientSecret: cfg.secrets.googleClientSecret },
    },
    { ...docker, dependsOn: [postgres, redis] },
  );

  return {
    replicaName: me.name,
    slotName: me.slotName,
    primary: `${fleet.mainPrivateIp}:${ports.postgres}`,
    postgresMode: postgres.mode,
    postgresVolume: postgres.volumeName,
    redisRole: redis.role,
    appMode: writeMode ? "write" : "read",
    publicAddress: host.publicAddress,
    hostKey: host.hostKey,
    sshUser: host.sshUser,
    privateIp: cfg.privateIp,
    pgHba: postgres.pgHba,
  };
}
