import * as pulumi from "@pulumi/pulumi";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { containerName } from "../lib/addresses";
import { baseContainer, digest, healthcheck, hostFile, hostPath, pullImage, replaceInPlace, whenRunning, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";
import { remoteStep, type HostShell } from "../lib/remote";
import { NGINX_RELOAD_SCRIPT, renderNginxConf, type ApiKeyRequests, type AppEndpoint } from "../templates/nginx";

/** How long a reload waits for the old workers' requests (the writes' proxy_read_timeout is the longest a request may take). */
const RELOAD_DRAIN_SECONDS = 60;

export interface NginxBalancerArgs {
  /** This host's memory budget (lib/memory.ts): the container's limit comes from it. */
  memory: MemoryBudget;
  hostName: string;
  shell: HostShell;
  image: string;
  networkMode: pulumi.Input<string>;
  httpPort: number;
  httpsPort: number;
  /** Operator's certificate and key (secret) for HTTPS; HTTP only when absent. */
  https?: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string> };
  /** The write-mode app next to the primary: its address is its current deploy slot's when it runs on this host. */
  mainApp: { name: string; address: pulumi.Input<string>; standby?: string };
  /** The read-mode app of every replica host, from the main stack's replicas list. */
  replicaApps: AppEndpoint[];
  /**
   * Concurrent client requests the balancer is sized for (the
   * balancerConcurrency setting); the template's default
   * (NGINX_DEFAULTS.concurrency) when absent. Sizes the upstream keep-alive
   * pools so that under this load no upstream connection is closed.
   */
  concurrency?: number;
  /** Requests per second each client address may make, and the burst it may use at once; absent: no limit. */
  rateLimit?: { perSecond: number; burst: number };
  /**
   * Requests that go to the writing app whatever their method: paths that
   * write on GET, and where requests carrying an API key go. The template's
   * defaults (DEFAULT_WRITE_PATHS, "writer") when absent.
   */
  routing?: { writePaths: readonly string[]; apiKeyRequests: ApiKeyRequests };
  /**
   * What the balancer serves: the paths that reach an app from outside
   * (the template's DEFAULT_PUBLIC_PATHS when absent) and the Host names it
   * answers (empty or absent: any Host; others get 421).
   */
  access?: { publicPaths: readonly string[]; serverNames: readonly string[] };
  timeoutSeconds: number;
}

const CONF_DIR = "/etc/nginx/synaxic";
const TLS_DIR = "/etc/nginx/tls";

/**
 * The public entry point on the main host. Writes go to the main app only;
 * reads are spread over every app. The configuration is a file on the host
 * that nginx reloads when it changes (adding a replica does not restart the
 * balancer); only its ports are published to the world.
 */
export class NginxBalancer extends pulumi.ComponentResource {
  public readonly containerName: string;
  public readonly config: pulumi.Output<string>;
  public readonly url: string;

  constructor(name: string, args: NginxBalancerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:NginxBalancer", name, {}, opts);
    const parent = { parent: this };
    this.containerName = containerName(args.hostName, "nginx");
    this.config = pulumi.output(args.mainApp.address).apply((address) => renderNginxConf({
      mainApp: { name: args.mainApp.name, address, ...(args.mainApp.standby !== undefined ? { standby: args.mainApp.standby } : {}) },
      replicaApps: args.replicaApps,
      concurrency: args.concurrency,
      ...(args.rateLimit ? { rateLimit: args.rateLimit } : {}),
      ...(args.routing ? { writePaths: args.routing.writePaths, apiKeyRequests: args.routing.apiKeyRequests } : {}),
      ...(args.access ? { publicPaths: args.access.publicPaths, serverNames: args.access.serverNames } : {}),
      listenPort: args.httpPort,
      ...(args.https ? { tls: { certFile: `${TLS_DIR}/fullchain.pem`, keyFile: `${TLS_DIR}/privkey.pem`, port: args.httpsPort } } : {}),
      foreground: true,
    }));
    this.url = args.https ? `https://<main public address>:${args.httpsPort}` : `http://<main public address>:${args.httpPort}`;

    const confDir = `${args.hostName}/nginx`;
    const confFile = hostFile(`${name}-conf`, args.shell, { path: `${confDir}/nginx.conf`, content: this.config, mode: "0644", owner: "0:0", timeoutSeconds: args.timeoutSeconds }, parent);
    const image = pullImage(`${name}-image`, args.image, parent);
    const container = new docker.Container(
      `${name}-container`,
      {
        name: this.containerName,
        ...memoryLimit(args.memory, "nginx"),
        ...stopGrace(STOP_GRACE.nginx),
        image: image.imageId,
        command: ["nginx", "-c", `${CONF_DIR}/nginx.conf`],
        // The only service listening on every interface: the public entry point.
        ...baseContainer(args.networkMode),
        mounts: [{ type: "bind", source: hostPath(args.shell, confDir), target: CONF_DIR, readOnly: true }],
        uploads: args.https
          ? [
              { file: `${TLS_DIR}/fullchain.pem`, content: args.https.certPem, permissions: "0644", owner: "0", group: "0" },
              { file: `${TLS_DIR}/privkey.pem`, content: pulumi.secret(args.https.keyPem), permissions: "0600", owner: "0", group: "0" },
            ]
          : [],
        healthcheck: healthcheck({ tests: ["CMD", "nginx", "-t", "-q", "-c", `${CONF_DIR}/nginx.conf`], intervalSeconds: 30, timeoutSeconds: 5, retries: 3 }),
      },
      { ...parent, ...replaceInPlace, dependsOn: [confFile] },
    );
    // A changed configuration is checked, then loaded without a restart;
    // the step ends once the workers of the old configuration have finished
    // their requests and exited (templates/nginx.ts, NGINX_RELOAD_SCRIPT), so
    // that an app container the old configuration used (a deploy's old slot)
    // is stopped only after nothing sends it requests any more.
    remoteStep(
      `${name}-reload`,
      args.shell,
      {
        argv: whenRunning(this.containerName, ["sh", "-c", NGINX_RELOAD_SCRIPT, "sh", this.containerName, `${CONF_DIR}/nginx.conf`, String(RELOAD_DRAIN_SECONDS)]),
        triggers: [this.config.apply(digest), container.id],
        timeoutSeconds: args.timeoutSeconds,
      },
      { ...parent, dependsOn: [container, confFile] },
    );
    this.registerOutputs({ containerName: this.containerName, url: this.url });
  }
}
