/**
 * The fleet's PostgreSQL image: the pinned official image plus a pinned
 * pgBackRest, built on each host by its own Docker engine (nothing is pushed
 * to or pulled from a registry but the base).
 *
 * PostgreSQL runs `archive_command` and `restore_command` itself, inside its
 * container, so pgBackRest must be in the image the server runs from.
 *
 * The official Debian-based image keeps the PostgreSQL project's apt source
 * (docker-library/postgres, 15/bookworm/Dockerfile: `aptRepo="[ signed-by=...
 * ] http://apt.postgresql.org/pub/repos/apt/ bookworm-pgdg main $PG_MAJOR"`
 * written to /etc/apt/sources.list.d/pgdg.list and left there), whose `main`
 * component carries pgbackrest: the build installs exactly the pinned
 * version from it. PGDG keeps only current package versions, so a pin that
 * PGDG has since replaced fails the build (apt-get: "Version ... was not
 * found") instead of installing another one; `pgbackrestVersion` is then
 * moved to the version `apt-cache policy pgbackrest` shows in the base image.
 * When the base already holds exactly the pinned version, nothing is
 * downloaded (an image that was built before, or a base that ships it).
 */
import { shellQuote } from "../lib/shell";
import { DEB_VERSION, PINNED_IMAGE, localImageTag } from "./local-image";

export interface PostgresImageParams {
  /** The pinned official image, e.g. postgres:15.13-bookworm. */
  baseImage: string;
  /** The pgbackrest package version to install, exactly as apt names it, e.g. 2.59.1-1.pgdg12+1. */
  pgbackrestVersion: string;
}

/** Directories pgBackRest uses inside the container, owned by postgres. */
export const PGBACKREST_DIRS = {
  /** The asynchronous archive queue (archive-async's spool-path). */
  spool: "/var/spool/pgbackrest",
  /** Lock files. */
  lock: "/tmp/pgbackrest",
  /** Log files, when file logging is on. */
  log: "/var/log/pgbackrest",
  /** Configuration: pgbackrest.conf (root:postgres 0640) and conf.d. */
  conf: "/etc/pgbackrest",
} as const;

function check(p: PostgresImageParams): void {
  if (!PINNED_IMAGE.test(p.baseImage)) throw new Error(`renderPostgresImageDockerfile: baseImage ${JSON.stringify(p.baseImage)} is not a pinned image reference`);
  if (!DEB_VERSION.test(p.pgbackrestVersion)) {
    throw new Error(`renderPostgresImageDockerfile: pgbackrestVersion ${JSON.stringify(p.pgbackrestVersion)} is not a Debian package version such as 2.59.1-1.pgdg12+1`);
  }
}

export function renderPostgresImageDockerfile(p: PostgresImageParams): string {
  check(p);
  const v = shellQuote(p.pgbackrestVersion);
  const d = PGBACKREST_DIRS;
  return `# The fleet's PostgreSQL image: ${p.baseImage} with pgBackRest ${p.pgbackrestVersion}.
FROM ${p.baseImage}
RUN set -eu; \\
	want=${v}; \\
	have="$(dpkg-query -W -f='\${Version}' pgbackrest 2>/dev/null || true)"; \\
	if [ "$have" != "$want" ]; then \\
		apt-get update; \\
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "pgbackrest=$want"; \\
		rm -rf /var/lib/apt/lists/*; \\
	fi; \\
	[ "$(dpkg-query -W -f='\${Version}' pgbackrest)" = "$want" ]; \\
	pgbackrest version; \\
	install -d -o postgres -g postgres -m 0750 ${d.spool} ${d.lock} ${d.log}; \\
	install -d -o root -g postgres -m 0750 ${d.conf} ${d.conf}/conf.d; \\
	rm -f /etc/pgbackrest.conf
LABEL org.synaxic.pgbackrest-version=${JSON.stringify(p.pgbackrestVersion)} org.synaxic.base-image=${JSON.stringify(p.baseImage)}
`;
}

/**
 * The local tag of the built image: named after what it is built from, so
 * that a new base or pin is a new tag and an image built before is never
 * overwritten while a container runs from it.
 */
export function postgresImageTag(p: PostgresImageParams): string {
  check(p);
  return localImageTag("synaxic-local/postgres", renderPostgresImageDockerfile(p));
}
