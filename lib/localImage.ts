/**
 * Builds an image on a host, with that host's own Docker engine, from a
 * Dockerfile that copies nothing (templates/local-image.ts), and gives its
 * image ID to the containers that run it. The fleet's PostgreSQL image
 * (lib/postgresImage.ts) and its Redis snapshot image
 * (components/RedisSnapshots.ts) are built this way; nothing is pushed to a
 * registry, and only the pinned base is pulled.
 *
 * The build is a command on the host, `docker build -` with the Dockerfile on
 * standard input (no build context). Debian's docker.io, which hosts get
 * (templates/host.ts), uses the classic builder for it; `--network host` lets
 * its RUN step reach the apt repositories on hosts whose engine has no
 * default bridge. The step re-runs when the Dockerfile (its standard input,
 * named by the tag) or the base image changes; its standard output is the
 * built image's ID, which the container takes as its image, so a rebuild that
 * yields a new image replaces the container and one that yields the same ID
 * changes nothing.
 */
import * as pulumi from "@pulumi/pulumi";
import { pullImage } from "./containers";
import { remoteStep, type HostShell } from "./remote";

/** The build script: argv[1] is the tag; the Dockerfile arrives on standard input; prints the image ID only. */
export const BUILD_SCRIPT =
  'set -eu; docker build --network host --tag "$1" - >&2; id=$(docker image inspect --format "{{.Id}}" "$1"); case "$id" in sha256:*) echo "$id" ;; *) echo "no image ID for $1: $id" >&2; exit 1 ;; esac';

export interface LocalImageArgs {
  /** The pinned image the Dockerfile builds FROM; pulled first (a RemoteImage named `name`). */
  baseImage: string;
  dockerfile: string;
  /** The local tag (localImageTag: named after the Dockerfile). */
  tag: string;
  timeoutSeconds: number;
}

/**
 * Pulls the base (resource `name`) and builds the image (`<name>-build`).
 * Returns the built image's ID, checked to be one.
 */
export function buildLocalImage(name: string, shell: HostShell, a: LocalImageArgs, opts: pulumi.CustomResourceOptions): { imageId: pulumi.Output<string>; tag: string } {
  const base = pullImage(name, a.baseImage, opts);
  const build = remoteStep(
    `${name}-build`,
    shell,
    { argv: ["sh", "-c", BUILD_SCRIPT, "sh", a.tag], stdin: a.dockerfile, triggers: [base.imageId, a.tag], timeoutSeconds: a.timeoutSeconds },
    { ...opts, dependsOn: [base] },
  );
  const stdout = (build as unknown as { stdout: pulumi.Output<string> }).stdout;
  return {
    imageId: stdout.apply((s) => {
      const id = (s ?? "").trim();
      if (!/^sha256:[a-f0-9]+$/.test(id)) throw new Error(`${name}: the image build printed ${JSON.stringify(id.slice(0, 80))}, not an image ID`);
      return id;
    }),
    tag: a.tag,
  };
}
