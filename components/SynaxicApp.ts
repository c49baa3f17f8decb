import * as pulumi from "@pulumi/pulumi";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { containerName } from "../lib/addresses";
import { baseContainer, healthcheck, pullImage, replaceInPlace, upload, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";

import { APP_PG_CA, APP_SECRETS_DIR, APP_TRUSTSTORE, APP_UID, appEnvironment, appHealthcheck } from "../templates/app";

export interface SynaxicAppArgs {
  /** This host's memory budget (lib/memory.ts): the container's limit comes from it. */
  memory: MemoryBudget;
  hostName: string;
  /** write: the main host's app, next to the primary. read: a replica host's app, reading its local replica. */
  mode: "write" | "read";
  image: pulumi.Input<string>;
  /**
   * An image already on the host's Docker engine, run as is instead of
   * pulling `image`: the local fleet's stand-in app (components/StandinAppImage.ts).
   */
  imageId?: pulumi.Input<string>;
  networkMode: pulumi.Input<string>;
  /** The app listens on this host's private address: the balancer and Prometheus on the main host reach it there. */
  privateIp: string;
  port: number;
  database: {
    /** Host the JDBC URL names (in the PostgreSQL certificate's SANs). */
    host: pulumi.Input<string>;
    port: number;
    name: string;
    user: string;
    password: pulumi.Input<string>;
    caPem: pulumi.Input<string>;
  };
  redis: {
    /**
     * The Redis master: the app reads and writes this one server in either
     * mode (its client runs single-server), so a replica host's app depends
     * on the primary host's Redis.
     */
    masterHost: pulumi.Input<string>;
    port: number;
    user: string;
    password: pulumi.Input<string>;
  };
  truststore: { base64: pulumi.Input<string>; password: pulumi.Input<string> };
  google: { clientId: string; clientSecret: pulumi.Input<string> };
}

/**
 * The Synaxic app in write mode (main host) or read mode (replica host).
 * Secrets reach it as files in a Spring config tree (mode 0400, owned by the
 * app user), never as environment variables, so `docker inspect` shows none.
 * `pulumi up` waits until its health check passes.
 */
export class SynaxicApp extends pulumi.ComponentResource {
  public readonly containerName: string;
  /** host:port where the app answers. */
  public readonly endpoint: string;
  public readonly port: number;
  public readonly container: docker.Container;

  constructor(name: string, args: SynaxicAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:SynaxicApp", name, {}, opts);
    const parent = { parent: this };
    this.containerName = containerName(args.hostName, "app");
    this.endpoint = `${args.privateIp}:${args.port}`;
    this.port = args.port;

    const env = pulumi
      .all([args.database.host, args.redis.masterHost])
      .apply(([dbHost, redisMasterHost]) =>
        appEnvironment({
          mode: args.mode,
          listenAddress: args.privateIp,
          listenPort: args.port,
          dbHost,
          dbPort: args.database.port,
          dbName: args.database.name,
          dbUser: args.database.user,
          redisMasterHost,
          redisPort: args.redis.port,
          redisUser: args.redis.user,
          googleClientId: args.google.clientId,
          maxRamPercentage: args.memory.appMaxRamPercentage,
        }),
      );

    const imageId = args.imageId ?? pullImage(`${name}-image`, args.image, parent).imageId;
    const secretFile = (property: string, value: pulumi.Input<string>) => upload(`${APP_SECRETS_DIR}${property}`, pulumi.secret(value), "0400", APP_UID);

    this.container = new docker.Container(
      `${name}-container`,
      {
        name: this.containerName,
        ...memoryLimit(args.memory, "app"),
        ...stopGrace(STOP_GRACE.app),
        image: imageId,
        envs: env,
        ...baseContainer(args.networkMode),
        uploads: [
          secretFile("spring.datasource.password", args.database.password),
          secretFile("spring.data.redis.password", args.redis.password),
          secretFile("REDIS_TRUSTSTORE_PASSWORD", args.truststore.password),
          secretFile("GOOGLE_CLIENT_SECRET", args.google.clientSecret),
          { file: APP_TRUSTSTORE, contentBase64: pulumi.secret(args.truststore.base64), permissions: "0400", owner: String(APP_UID), group: String(APP_UID) },
          upload(APP_PG_CA, args.database.caPem, "0444", APP_UID),
        ],
        healthcheck: healthcheck({
          // The image has bash but no curl: ask /actuator/health over /dev/tcp.
          tests: ["CMD-SHELL", appHealthcheck(args.port, args.privateIp)],
          intervalSeconds: 10,
          timeoutSeconds: 5,
          retries: 6,
          startPeriodSeconds: 60,
        }),
        wait: true,
        waitTimeout: 300,
      },
      { ...parent, ...replaceInPlace },
    );

    this.registerOutputs({ containerName: this.containerName, endpoint: this.endpoint });
  }
}
