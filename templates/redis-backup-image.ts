/**
 * The image the Redis snapshot job runs from: the fleet's pinned Redis image
 * (redisImage) plus pinned curl, openssl and ca-certificates from Debian,
 * built on each host by its own Docker engine (lib/localImage.ts).
 *
 * Built FROM the image the fleet's Redis runs, so redis-cli (which takes the
 * snapshot) and redis-check-rdb (which checks it) are of exactly the
 * server's version: the RDB format version changes between Redis majors, and
 * an older redis-check-rdb refuses a newer file. The official image has
 * both, in /usr/local/bin (redis-check-rdb a link to redis-server), and
 * purges what its build needed, ca-certificates and wget among them
 * (docker-library/redis, 7.0/debian/Dockerfile at Redis 7.0.15: `apt-get
 * purge -y --auto-remove` after `make install`), so it has no curl, no
 * openssl command and no CA bundle: those come from the Debian release the
 * image is built on (trixie for redis:8.10.2-trixie, whose apt sources it
 * keeps), at exactly the pinned versions, and only when the base lacks
 * them (renderPinnedDebianInstall). Debian replaces a package's version in
 * its archive with each security update; a pin the archive no longer carries
 * fails the build, and redisBackupPackages is moved to the versions
 * `apt-cache policy curl openssl ca-certificates` shows in the base image.
 * curl's --aws-sigv4 came with curl 7.75 (bookworm has 7.88, trixie 8.14).
 */
import { PINNED_IMAGE, localImageTag, renderPinnedDebianInstall } from "./local-image";

/** Debian package versions, exactly as apt names them. */
export interface RedisBackupPackages {
  curl: string;
  openssl: string;
  caCertificates: string;
}

export interface RedisBackupImageParams {
  /** The fleet's pinned Redis image (redisImage), e.g. redis:8.10.2-trixie. */
  baseImage: string;
  packages: RedisBackupPackages;
}

/**
 * The versions Debian's archive offered when this was written (`apt-cache
 * policy`), per Debian release of the Redis image: trixie (trixie,
 * trixie-updates, trixie-security) for the default redis:8.10.2-trixie,
 * bookworm for a fleet that keeps a bookworm-based Redis 7 image.
 */
export const REDIS_BACKUP_PACKAGES_BY_SUITE = {
  trixie: { curl: "8.14.1-2+deb13u7", openssl: "3.5.9-1~deb13u1", caCertificates: "20250419+deb13u1" },
  bookworm: { curl: "7.88.1-10+deb12u15", openssl: "3.0.22-1~deb12u2", caCertificates: "20250419~deb12u2" },
} as const satisfies Record<string, RedisBackupPackages>;

/** The default for the default Redis image. */
export const REDIS_BACKUP_PACKAGES_DEFAULT: RedisBackupPackages = REDIS_BACKUP_PACKAGES_BY_SUITE.trixie;

/** The default pins for a Redis image: bookworm's when its tag names bookworm, trixie's otherwise. */
export function redisBackupPackagesDefault(redisImage: string): RedisBackupPackages {
  const tag = redisImage.slice(redisImage.lastIndexOf(":") + 1);
  return /(^|-)bookworm($|-)/.test(tag) ? REDIS_BACKUP_PACKAGES_BY_SUITE.bookworm : REDIS_BACKUP_PACKAGES_BY_SUITE.trixie;
}

function check(p: RedisBackupImageParams): void {
  if (!PINNED_IMAGE.test(p.baseImage)) throw new Error(`renderRedisBackupImageDockerfile: baseImage ${JSON.stringify(p.baseImage)} is not a pinned image reference`);
}

export function renderRedisBackupImageDockerfile(p: RedisBackupImageParams): string {
  check(p);
  const install = renderPinnedDebianInstall("renderRedisBackupImageDockerfile", [
    { name: "curl", version: p.packages.curl },
    { name: "openssl", version: p.packages.openssl },
    { name: "ca-certificates", version: p.packages.caCertificates },
  ]);
  return `# The fleet's Redis snapshot image: ${p.baseImage} with curl ${p.packages.curl}, openssl ${p.packages.openssl}, ca-certificates ${p.packages.caCertificates}.
FROM ${p.baseImage}
RUN set -eu; \\
	${install.join("\n").replace(/^\t/, "")}; \\
	redis-cli --version; \\
	command -v redis-check-rdb; \\
	openssl version; \\
	curl --version | head -n 1; \\
	curl --help all | grep -q -- --aws-sigv4
LABEL org.synaxic.redis-backup-packages=${JSON.stringify(`curl=${p.packages.curl} openssl=${p.packages.openssl} ca-certificates=${p.packages.caCertificates}`)} org.synaxic.base-image=${JSON.stringify(p.baseImage)}
`;
}

/** The local tag of the built image, named after its Dockerfile. */
export function redisBackupImageTag(p: RedisBackupImageParams): string {
  return localImageTag("synaxic-local/redis-backup", renderRedisBackupImageDockerfile(p));
}
