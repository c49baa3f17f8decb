import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { containerIp, containerName } from "../lib/addresses";
import { HOST_FILES_ROOT, baseContainer, digest, hostFile, pullImage, replaceInPlace } from "../lib/containers";
import { remoteStep, type Connection } from "../lib/remote";
import { renderNginxConf, type AppEndpoint } from "../templates/nginx";

export interface NginxBalancerArgs {
  hostName: string;
  connection: pulumi.Input<Connection>;
  sudo: boolean;
  image: string;
  networkName: pulumi.Input<string>;
  dockerSubnet: string;
  httpPort: number;
  httpsPort: number;
  /** Operator's certificate and key (secret) for HTTPS; HTTP only when absent. */
  https?: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string> };
  /** The write-mode app next to the primary. */
  mainApp: AppEndpoint;
  /** The read-mode app of every replica host, from the main stack's replicas list. */
  replicaApps: AppEndpoint[];
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
  public readonly config: string;
  public readonly url: string;

  constructor(name: string, args: NginxBalancerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:NginxBalancer", name, {}, opts);
    const parent = { parent: this };
    this.containerName = containerName(args.hostName, "nginx");
    this.config = renderNginxConf({
      mainApp: args.mainApp,
      replicaApps: args.replicaApps,
      listenPort: 8080,
      ...(args.https ? { tls: { certFile: `${TLS_DIR}/fullchain.pem`, keyFile: `${TLS_DIR}/privkey.pem`, port: 8443 } } : {}),
      foreground: true,
    });
    this.url = args.https ? `https://<main public address>:${args.httpsPort}` : `http://<main public address>:${args.httpPort}`;

    const hostDir = `${HOST_FILES_ROOT}/${args.hostName}/nginx`;
    const confFile = hostFile(
      `${name}-conf`,
      { connection: args.connection, path: `${hostDir}/nginx.conf`, content: this.config, mode: "0644", owner: "0:0", timeoutSeconds: args.timeoutSeconds, sudo: args.sudo },
      parent,
    );
    const image = pullImage(`${name}-image`, args.image, parent);
    const container = new docker.Container(
      `${name}-container`,
      {
        name: this.containerName,
        image: image.imageId,
        hostname: this.containerName,
        command: ["nginx", "-c", `${CONF_DIR}/nginx.conf`],
        ...baseContainer(args.networkName, containerIp(args.dockerSubnet, "nginx"), ["nginx"]),
        // Only the balancer is public.
        ports: [
          { internal: 8080, external: args.httpPort, ip: "0.0.0.0" },
          ...(args.https ? [{ internal: 8443, external: args.httpsPort, ip: "0.0.0.0" }] : []),
        ],
        mounts: [{ type: "bind", source: hostDir, target: CONF_DIR, readOnly: true }],
        uploads: args.https
          ? [
              { file: `${TLS_DIR}/fullchain.pem`, content: args.https.certPem, permissions: "0644", owner: "0", group: "0" },
              { file: `${TLS_DIR}/privkey.pem`, content: pulumi.secret(args.https.keyPem), permissions: "0600", owner: "0", group: "0" },
            ]
          : [],
        healthcheck: { tests: ["CMD", "nginx", "-t", "-q", "-c", `${CONF_DIR}/nginx.conf`], interval: "30s", timeout: "5s", retries: 3 },
      },
      { ...parent, ...replaceInPlace, dependsOn: [confFile] },
    );
    // A changed configuration is checked, then loaded without a restart.
    remoteStep(
      `${name}-reload`,
      {
        connection: args.connection,
        argv: [...(args.sudo ? ["sudo", "-n"] : []), "sh", "-c", 'docker exec "$1" nginx -t -q -c "$2" && docker exec "$1" nginx -s reload -c "$2"', "sh", this.containerName, `${CONF_DIR}/nginx.conf`],
        triggers: [digest(this.config), container.id],
        timeoutSeconds: args.timeoutSeconds,
      },
      { ...parent, dependsOn: [container, confFile] },
    );
    this.registerOutputs({ containerName: this.containerName, url: this.url });
  }
}
