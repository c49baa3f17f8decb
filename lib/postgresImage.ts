/**
 * Builds the fleet's PostgreSQL image (templates/postgres-image.ts) on a
 * host, with that host's own Docker engine (lib/localImage.ts), and gives its
 * image ID to the container that runs it.
 */
import type * as pulumi from "@pulumi/pulumi";
import { buildLocalImage } from "./localImage";
import type { HostShell } from "./remote";
import { postgresImageTag, renderPostgresImageDockerfile, type PostgresImageParams } from "../templates/postgres-image";

export function buildPostgresImage(
  name: string,
  shell: HostShell,
  p: PostgresImageParams & { timeoutSeconds: number },
  opts: pulumi.CustomResourceOptions,
): { imageId: pulumi.Output<string>; tag: string } {
  const params = { baseImage: p.baseImage, pgbackrestVersion: p.pgbackrestVersion };
  // The base keeps the resource name the pulled image had before the fleet built its own: its place in existing stacks.
  return buildLocalImage(name, shell, { baseImage: p.baseImage, dockerfile: renderPostgresImageDockerfile(params), tag: postgresImageTag(params), timeoutSeconds: p.timeoutSeconds }, opts);
}
