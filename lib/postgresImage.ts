/**
 * Builds the fleet's PostgreSQL image (templates/postgres-image.ts) on a
 * host, with that host's own Docker engine, and gives its image ID to the
 * container that runs it.
 *
 * The build is a command on the host, `docker build -` with the Dockerfile on
 * standard input (no build context: the Dockerfile copies nothing). Debian's
 * docker.io, which hosts get (templates/host.ts), uses the classic builder
 * for it; `--network host` lets its RUN step reach the PostgreSQL apt
 * repository on hosts whose engine has no default bridge. The step re-runs
 * when the Dockerfile (its standard input) or the base image changes; its
 * standard output is the built image's ID, which the container takes as its
 * image, so a rebuild that yields a new image replaces the container and one
 * that yields the same ID changes nothing.
 */
import * as pulumi from "@pulumi/pulumi";
import { pullImage } from "./containers";
import { remoteStep, type HostShell } from "./remote";
import { postgresImageTag, renderPostgresImageDockerfile, type PostgresImageParams } from "../templates/postgres-image";

/** The build script: argv[1] is the tag; the Dockerfile arrives on standard input; prints the image ID only. */
export const BUILD_SCRIPT =
  'set -eu; docker build --network host --tag "$1" - >&2; id=$(docker image inspect --format "{{.Id}}" "$1"); case "$id" in sha256:*) echo "$id" ;; *) echo "no image ID for $1: $id" >&2; exit 1 ;; esac';

export function buildPostgresImage(
  name: string,
  shell: HostShell,
  p: PostgresImageParams & { timeoutSeconds: number },
  opts: pulumi.CustomResourceOptions,
): { imageId: pulumi.Output<string>; tag: string } {
  const params = { baseImage: p.baseImage, pgbackrestVersion: p.pgbackrestVersion };
  const dockerfile = renderPostgresImageDockerfile(params);
  const tag = postgresImageTag(params);
  // Named as the pulled image was before the fleet built its own: the base keeps its place in existing stacks.
  const base = pullImage(name, p.baseImage, opts);
  const build = remoteStep(
    `${name}-build`,
    shell,
    { argv: ["sh", "-c", BUILD_SCRIPT, "sh", tag], stdin: dockerfile, triggers: [base.imageId, tag], timeoutSeconds: p.timeoutSeconds },
    { ...opts, dependsOn: [base] },
  );
  const stdout = (build as unknown as { stdout: pulumi.Output<string> }).stdout;
  return {
    imageId: stdout.apply((s) => {
      const id = (s ?? "").trim();
      if (!/^sha256:[a-f0-9]+$/.test(id)) throw new Error(`${name}: the image build printed ${JSON.stringify(id.slice(0, 80))}, not an image ID`);
      return id;
    }),
    tag,
  };
}
