/**
 * The commands that build and remove the stand-in app's image on this
 * machine (components/StandinAppImage.ts). Pure functions.
 */
/** The stand-in's sources, in standin-app/: what goes into the build context, and what its tag is a digest of. */
export const STANDIN_APP_FILES = ["Dockerfile", "package.json", "package-lock.json", "server.mjs"] as const;

/** The repository part of the stand-in image's tag; the tag is a digest of its sources. */
export const STANDIN_APP_REPOSITORY = "synaxic-standin-app";

/** The base image standin-app/Dockerfile names (a unit test keeps them in step). */
export const STANDIN_APP_BASE_IMAGE = "node:22.23.2-bookworm-slim";

/**
 * Builds the image in a temporary context: the sources copied from
 * `sourceDir`, their dependencies installed there by `npm ci --omit=dev` from
 * the lockfile (on this machine, so `docker build` needs no registry but for
 * the base image, and runs no step of its own), then `docker build --tag`.
 * npm's and docker's output go to stderr; stdout is the image ID alone, as
 * `docker image inspect` gives it for the tag (as lib/postgresImage.ts does).
 */
export function standinBuildArgv(sourceDir: string, tag: string): string[] {
  const script = [
    "set -eu",
    "src=$1; tag=$2; shift 2",
    `command -v npm >/dev/null 2>&1 || { echo "building the stand-in app needs npm (Node.js 20 or later: https://nodejs.org/en/download)" >&2; exit 1; }`,
    `command -v docker >/dev/null 2>&1 || { echo "building the stand-in app needs the docker CLI (https://docs.docker.com/engine/install/)" >&2; exit 1; }`,
    "umask 022",
    `ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT`,
    `for f in "$@"; do cp "$src/$f" "$ctx/$f"; done`,
    `npm ci --prefix "$ctx" --omit=dev --ignore-scripts --no-audit --no-fund >&2`,
    // No step of the build needs a network (the Dockerfile only copies).
    `docker build --network none --tag "$tag" "$ctx" >&2`,
    `id=$(docker image inspect --format "{{.Id}}" "$tag")`,
    `case "$id" in sha256:*) echo "$id" ;; *) echo "no image ID for $tag: $id" >&2; exit 1 ;; esac`,
  ].join("\n");
  return ["sh", "-c", script, "sh", sourceDir, tag, ...STANDIN_APP_FILES];
}

/** Removes the image's tag, if it is still there (the image goes with its last tag). */
export function standinRemoveArgv(tag: string): string[] {
  return ["sh", "-c", 'if docker image inspect "$1" >/dev/null 2>&1; then docker image rm "$1"; fi', "sh", tag];
}

/** The image ID the build printed, checked. */
export function parseImageId(stdout: string): string {
  const id = stdout.trim();
  if (!/^sha256:[0-9a-f]+$/.test(id)) throw new Error(`the stand-in app's build printed ${JSON.stringify(id.slice(0, 200))} where its image ID (sha256:...) was expected`);
  return id;
}

