import * as pulumi from "@pulumi/pulumi";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { containerName } from "../lib/addresses";
import { createHash } from "node:crypto";
import { baseContainer, healthcheck, pullImage, upload, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";
import { remoteStep, type HostShell } from "../lib/remote";
import type { AppEndpoint } from "../templates/nginx";
import { APP_PG_CA, APP_SECRETS_DIR, APP_SPEC_LABEL, APP_TRUSTSTORE, APP_UID, appEnvironment, appHealthcheck, appSlotAddresses, appSlotPort, isAppSlot, renderAppRemoveScript, renderAppRetireScript, renderAppSlotScript, type AppSlot } from "../templates/app";

export interface SynaxicAppArgs {
  /** This host's memory budget (lib/memory.ts): the container's limit comes from it. */
  memory: MemoryBudget;
  hostName: string;
  /** Runs the slot choice on the host (docker CLI). */
  shell: HostShell;
  timeoutSeconds: number;
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
  /** appPort: slot a listens on it, slot b on the next port (templates/app.ts, appSlotPort). */
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

/** A host's app as a balancer in another stack sees it: both deploy slots, slot a first. */
export function appOnHost(name: string, ip: string, appPort: number): AppEndpoint {
  const [address, standby] = appSlotAddresses(ip, appPort) as [string, string];
  return { name, address, standby };
}

/**
 * The Synaxic app in write mode (main host) or read mode (replica host).
 * Secrets reach it as files in a Spring config tree (mode 0400, owned by the
 * app user), never as environment variables, so `docker inspect` shows none.
 * `pulumi up` waits until its health check passes.
 *
 * Deploys are gapless (templates/app.ts, APP_SLOTS): the container runs in
 * slot a or b, and a change of anything it is given (image, environment,
 * secret files, limits) starts the new container in the other slot beside
 * the running one (the container is replaced create-before-delete, Pulumi's
 * default). The balancer's configuration names the new slot once that
 * container is healthy (the endpoint is one of its outputs), and
 * retireOldSlot's step stops the old container after the balancer's reload.
 */
export class SynaxicApp extends pulumi.ComponentResource {
  /** The slot the app runs in (known after the slot step on a change). */
  public readonly slot: pulumi.Output<AppSlot>;
  public readonly containerName: pulumi.Output<string>;
  /** host:port where the app answers now (its slot's port). */
  public readonly endpoint: pulumi.Output<string>;
  /** host:port of both slots, slot a first: where a balancer on another host looks for this app. */
  public readonly slotEndpoints: string[];
  public readonly container: docker.Container;
  private readonly retire: { name: string; shell: HostShell; prefix: string; timeoutSeconds: number };

  constructor(name: string, args: SynaxicAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:SynaxicApp", name, {}, opts);
    const parent = { parent: this };
    const prefix = containerName(args.hostName, "app");
    this.retire = { name, shell: args.shell, prefix, timeoutSeconds: args.timeoutSeconds };
    this.slotEndpoints = appSlotAddresses(args.privateIp, args.port);

    const env = (port: number) =>
      pulumi.all([args.database.host, args.redis.masterHost]).apply(([dbHost, redisMasterHost]) =>
        appEnvironment({
          mode: args.mode,
          listenAddress: args.privateIp,
          listenPort: port,
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
    const uploads = [
      secretFile("spring.datasource.password", args.database.password),
      secretFile("spring.data.redis.password", args.redis.password),
      secretFile("REDIS_TRUSTSTORE_PASSWORD", args.truststore.password),
      secretFile("GOOGLE_CLIENT_SECRET", args.google.clientSecret),
      { file: APP_TRUSTSTORE, contentBase64: pulumi.secret(args.truststore.base64), permissions: "0400", owner: String(APP_UID), group: String(APP_UID) },
      upload(APP_PG_CA, args.database.caPem, "0444", APP_UID),
    ];
    const limits = { ...memoryLimit(args.memory, "app"), ...stopGrace(STOP_GRACE.app) };

    // A digest of everything the container is given except its slot's port.
    // It is not secret (a SHA-256 over random passwords among other things
    // reveals none of them), so it may be a label.
    const spec = pulumi.unsecret(
      pulumi.all([imageId, env(0), pulumi.output(uploads), limits]).apply((parts) => createHash("sha256").update(JSON.stringify(parts)).digest("hex").slice(0, 32)),
    );
    // Which slot: the one already running these settings, else a free one.
    // Runs again (replaced) only when the settings change.
    const choice = remoteStep(
      `${name}-slot`,
      args.shell,
      { argv: ["sh", "-c", renderAppSlotScript(), "sh", prefix], stdin: spec, timeoutSeconds: args.timeoutSeconds, triggers: [spec] },
      parent,
    );
    this.slot = (choice as unknown as { stdout: pulumi.Output<string> }).stdout.apply((out) => {
      const s = out.trim();
      if (!isAppSlot(s)) throw new Error(`${name}: the slot step printed ${JSON.stringify(out)}, not a or b`);
      return s;
    });
    this.containerName = pulumi.interpolate`${prefix}-${this.slot}`;
    const port = this.slot.apply((s) => appSlotPort(args.port, s));

    this.container = new docker.Container(
      `${name}-container`,
      {
        name: this.containerName,
        ...limits,
        image: imageId,
        envs: port.apply(env),
        ...baseContainer(args.networkMode),
        labels: [
          { label: "app", value: "synaxic" },
          { label: APP_SPEC_LABEL, value: spec },
        ],
        uploads,
        healthcheck: healthcheck({
          // The image has bash but no curl: ask /actuator/health over /dev/tcp.
          tests: port.apply((p) => ["CMD-SHELL", appHealthcheck(p, args.privateIp)]),
          intervalSeconds: 10,
          timeoutSeconds: 5,
          retries: 6,
          startPeriodSeconds: 60,
        }),
        wait: true,
        waitTimeout: 300,
      },
      // Create-before-delete (no replaceInPlace): the new slot's container runs
      // beside the old one. Retained on delete: Pulumi deletes a replaced
      // resource once the program has registered everything, which can be
      // before the balancer's reload has finished (seen on the engine tier:
      // writes refused by the stopped old slot). The old slot is stopped by
      // retireOldSlot's step, ordered after the reload, and on destroy that
      // step removes the app's containers.
      { ...parent, dependsOn: [choice], retainOnDelete: true },
    );

    // Through the container: whatever points at the endpoint (the balancer's
    // configuration and its reload) waits until the new slot's container is
    // created, which with `wait` is once its health check passes.
    this.endpoint = pulumi.all([this.container.id, port]).apply(([, p]) => `${args.privateIp}:${p}`);

    this.registerOutputs({ slot: this.slot, containerName: this.containerName, endpoint: this.endpoint });
  }

  /**
   * Stops and removes the other deploy slot's container once `after` is done
   * (the balancer on this host, whose reload moved its requests to the new
   * slot; nothing when no balancer runs here: balancers elsewhere list both
   * slots). Runs again on every deploy (its input is the new container);
   * on destroy it removes the app's containers.
   */
  retireOldSlot(after: pulumi.Resource[]): pulumi.Resource {
    const r = this.retire;
    return remoteStep(
      `${r.name}-retire`,
      r.shell,
      {
        argv: ["sh", "-c", renderAppRetireScript(STOP_GRACE.app.seconds), "sh", r.prefix],
        stdin: pulumi.interpolate`${this.container.name}\n${this.container.id}\n`,
        deleteArgv: ["sh", "-c", renderAppRemoveScript(), "sh", r.prefix],
        timeoutSeconds: r.timeoutSeconds + STOP_GRACE.app.seconds,
      },
      // Not a child of this component: the balancer depends on the app, and a
      // child that waits for the balancer would make that a cycle.
      { dependsOn: [this.container, ...after] },
    );
  }
}
