/**
 * What the images the fleet builds on its own hosts share (the PostgreSQL
 * image, templates/postgres-image.ts; the Redis snapshot image,
 * templates/redis-backup-image.ts): a pinned base, Debian packages pinned to
 * an exact version and installed only when the base lacks that version (so a
 * base that already holds them, or an image built before, needs no network),
 * and a local tag named after the Dockerfile.
 *
 * Pure functions from typed parameters to text.
 */
import { createHash } from "node:crypto";

/** A Debian package version (policy 5.6.12: [epoch:]upstream[-revision]). */
export const DEB_VERSION = /^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$/;
/** A Debian package name (policy 5.6.1). */
export const DEB_PACKAGE = /^[a-z0-9][a-z0-9.+-]+$/;
/** An image reference with a tag or a digest. */
export const PINNED_IMAGE = /^[a-z0-9][a-z0-9._/:-]*(@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$/;

/**
 * The local tag of an image built from `dockerfile`: a digest of its text, so
 * that a new base or pin is a new tag, and an image built before is never
 * overwritten while a container runs from it.
 */
export function localImageTag(repository: string, dockerfile: string): string {
  if (!/^synaxic-local\/[a-z0-9-]+$/.test(repository)) throw new Error(`localImageTag: ${JSON.stringify(repository)} is not a synaxic-local/ repository`);
  return `${repository}:${createHash("sha256").update(dockerfile).digest("hex").slice(0, 16)}`;
}

/**
 * The body of a RUN step (POSIX sh, `\`-continued) that installs each package
 * at exactly its version unless the base already holds that version
 * installed: only then does it run `apt-get update` and `apt-get install
 * --no-install-recommends name=version ...` (apt installs the dependencies a
 * pinned version needs, e.g. curl's libcurl4 of the same version). It then
 * checks every package is installed at its pin: a version the archive no
 * longer carries fails the build (apt-get: "Version ... was not found")
 * rather than installing another.
 *
 * "Installed" is dpkg's status "install ok installed" (dpkg-query's
 * ${Status}): a package removed with its configuration kept still has a
 * version, but is not installed.
 */
export function renderPinnedDebianInstall(fn: string, packages: readonly { name: string; version: string }[]): string[] {
  if (packages.length === 0) throw new Error(`${fn}: no packages to pin`);
  for (const p of packages) {
    if (!DEB_PACKAGE.test(p.name)) throw new Error(`${fn}: ${JSON.stringify(p.name)} is not a Debian package name`);
    if (!DEB_VERSION.test(p.version)) throw new Error(`${fn}: the version of ${p.name}, ${JSON.stringify(p.version)}, is not a Debian package version such as 7.88.1-10+deb12u14`);
  }
  const status = `dpkg-query -W -f='\${Status} \${Version}' "\${p%%=*}" 2>/dev/null`;
  return [
    // Names and versions hold no character the shell expands (DEB_PACKAGE, DEB_VERSION).
    `\tpins="${packages.map((p) => `${p.name}=${p.version}`).join(" ")}"; \\`,
    "\tneed=; \\",
    "\tfor p in $pins; do \\",
    `\t\t[ "$(${status} || true)" = "install ok installed \${p#*=}" ] || need="$need $p"; \\`,
    "\tdone; \\",
    '\tif [ -n "$need" ]; then \\',
    "\t\tapt-get update; \\",
    "\t\tDEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need; \\",
    "\t\trm -rf /var/lib/apt/lists/*; \\",
    "\tfi; \\",
    "\tfor p in $pins; do \\",
    `\t\t[ "$(${status} || true)" = "install ok installed \${p#*=}" ] || { echo "\${p%%=*} is not installed at \${p#*=}" >&2; exit 1; }; \\`,
    "\tdone",
  ];
}
