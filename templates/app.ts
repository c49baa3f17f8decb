/**
 * What the Synaxic app container is given: its plain environment (secrets
 * are files, see APP_SECRETS_DIR) and its health check. Pure functions.
 */
import { sh } from "../lib/shell";

/** uid of `appuser` in the app image. */
export const APP_UID = 1001;

/** Where the app finds its secrets: Spring Boot's config tree reads each file as the property its name gives. */
export const APP_SECRETS_DIR = "/run/synaxic/app/";
export const APP_TRUSTSTORE = "/app/redis-tls/truststore.p12";
export const APP_PG_CA = "/app/pg-tls/ca.crt";

/** The app's plain environment (no secrets: those are files in APP_SECRETS_DIR). */
export function appEnvironment(p: {
  mode: "write" | "read";
  /** Address and port the app listens on: the host's private address (the balancer and Prometheus reach it there). */
  listenAddress: string;
  listenPort: number;
  dbHost: string;
  dbPort: number;
  dbName: string;
  dbUser: string;
  /**
   * The Redis server the app uses, for reads and writes, in either mode: the
   * master. The app's Redis client (the Redisson starter) runs single-server
   * against spring.data.redis.host; the read-mode variables of the old
   * setup's .env (SYNAXIC_REDIS_READ_MODE, SPRING_DATA_REDIS_SLAVE_HOSTS,
   * SPRING_DATA_REDIS_REPLICA_HOST) only fed spring.redisson.* properties
   * the starter never reads, so they are not set.
   */
  redisMasterHost: string;
  redisPort: number;
  redisUser: string;
  googleClientId: string;
  /**
   * The JVM's maximum heap as a percentage of the container's memory limit
   * (HotSpot's -XX:MaxRAMPercentage, which it applies to the cgroup limit).
   * Given through JAVA_TOOL_OPTIONS, which every HotSpot JVM reads whatever
   * the image's command line.
   */
  maxRamPercentage?: number;
}): string[] {
  const jdbc = `jdbc:postgresql://${p.dbHost}:${p.dbPort}/${p.dbName}?sslmode=verify-full&sslrootcert=${APP_PG_CA}${p.mode === "read" ? "&readOnly=true" : ""}`;
  const env: Record<string, string> = {
    SPRING_PROFILES_ACTIVE: "prod",
    SERVER_ADDRESS: p.listenAddress,
    SERVER_PORT: String(p.listenPort),
    // Required, not optional: without the secrets directory Spring Boot would
    // start with the literal "${...}" placeholders bound as passwords.
    SPRING_CONFIG_IMPORT: `configtree:${APP_SECRETS_DIR}`,
    SPRING_DATASOURCE_URL: jdbc,
    SPRING_DATASOURCE_USERNAME: p.dbUser,
    SPRING_DATA_REDIS_MASTER_HOST: p.redisMasterHost,
    SPRING_DATA_REDIS_PORT: String(p.redisPort),
    SPRING_DATA_REDIS_USERNAME: p.redisUser,
    SPRING_DATA_REDIS_SSL_ENABLED: "true",
    GOOGLE_CLIENT_ID: p.googleClientId,
  };
  if (p.maxRamPercentage !== undefined) {
    if (!Number.isInteger(p.maxRamPercentage) || p.maxRamPercentage < 10 || p.maxRamPercentage > 90) {
      throw new Error(`appEnvironment: maxRamPercentage must be a whole percentage from 10 to 90, got ${p.maxRamPercentage}`);
    }
    env.JAVA_TOOL_OPTIONS = `-XX:MaxRAMPercentage=${p.maxRamPercentage}.0`;
  }
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}


/**
 * The container health check: the image has bash but no curl, so it asks
 * /actuator/health over bash's /dev/tcp and passes only when the top-level
 * status is UP. Component statuses nest below it (`{"status":"DOWN",
 * "components":{"redis":{"status":"UP"}}}`), so the check first removes every
 * nested object, innermost first, until only the top level's own fields are
 * left, and then looks for its status; Jackson's field order does not matter.
 */
export function appHealthcheck(port: number, host = "127.0.0.1"): string {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`appHealthcheck: port ${port} is not a TCP port`);
  const script = [
    `exec 3<>/dev/tcp/${host}/${port} || exit 1`,
    `printf 'GET /actuator/health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3`,
    // The body: everything after the blank line that ends the headers.
    `r=$(cat <&3); b=\${r#*$'\\r\\n\\r\\n'}`,
    `[[ $b == "{"* ]] || exit 1`,
    `while [[ $b =~ ^(\\{.*)\\{[^{}]*\\}(.*)$ ]]; do b="\${BASH_REMATCH[1]}\${BASH_REMATCH[2]}"; done`,
    `[[ $b =~ \\"status\\"[[:space:]]*:[[:space:]]*\\"UP\\" ]]`,
  ].join("; ");
  return sh(["timeout", "5", "bash", "-c", script]);
}

/**
 * Gapless deploys. Each host runs its app in one of two slots: container
 * synaxic-<host>-app-a listening on appPort, or synaxic-<host>-app-b on
 * appPort + 1. A changed app (new image, settings or secrets) starts in the
 * other slot beside the running one; once its health check passes, the
 * balancer is pointed at it and reloaded, and only then is the old container
 * stopped (SIGTERM: Spring Boot finishes the requests it has, then exits).
 */
export const APP_SLOTS = ["a", "b"] as const;
export type AppSlot = (typeof APP_SLOTS)[number];

export function isAppSlot(s: string): s is AppSlot {
  return (APP_SLOTS as readonly string[]).includes(s);
}

/** The port a slot's container listens on: appPort for slot a, appPort + 1 for slot b. */
export function appSlotPort(appPort: number, slot: AppSlot): number {
  if (!Number.isInteger(appPort) || appPort < 1 || appPort > 65534) throw new Error(`appSlotPort: appPort ${appPort} leaves no room for slot b (appPort + 1)`);
  return slot === "a" ? appPort : appPort + 1;
}

/** Every slot's address on a host, slot a first. */
export function appSlotAddresses(ip: string, appPort: number): string[] {
  return APP_SLOTS.map((s) => `${ip}:${appSlotPort(appPort, s)}`);
}

/** The Docker label on an app container that holds the digest of its settings. */
export const APP_SPEC_LABEL = "synaxic.app-spec";

/**
 * A POSIX shell script for `sh -c SCRIPT sh PREFIX`, given a settings
 * digest on standard input, that prints the slot the app with those settings
 * runs in: the slot whose container
 * already carries that digest (nothing changed, or a deploy that was
 * interrupted after its container was created), otherwise the first slot
 * whose container name is free. The container of an earlier version of the
 * program, PREFIX itself, listens on slot a's port, so slot a is not free
 * while it exists. When both slots are taken by other settings it fails,
 * naming them: one of them is left over and must be removed.
 */
export function renderAppSlotScript(): string {
  return [
    "set -u",
    'p=$1; want=$(cat)',
    "for s in a b; do",
    `  spec=$(docker container inspect -f '{{index .Config.Labels "${APP_SPEC_LABEL}"}}' "$p-$s" 2>/dev/null) || continue`,
    '  if [ "$spec" = "$want" ]; then echo "$s"; exit 0; fi',
    "done",
    "for s in a b; do",
    '  docker container inspect "$p-$s" >/dev/null 2>&1 && continue',
    '  if [ "$s" = a ] && docker container inspect "$p" >/dev/null 2>&1; then continue; fi',
    '  echo "$s"; exit 0',
    "done",
    'echo "both app slots are taken ($p-a and $p-b, neither with these settings): remove the one that is not serving (docker rm -f), then run pulumi up again" >&2',
    "exit 1",
  ].join("\n");
}

/**
 * A POSIX shell script for `sh -c SCRIPT sh PREFIX`, given on standard input
 * the name of the app container that now serves (and, on a second line, its
 * ID, so that every deploy runs it again): stops every other app container of
 * the host (the other deploy slot, and PREFIX itself, the name an earlier
 * version of the program used) with Docker's stop, which sends SIGTERM and
 * waits up to STOP_SECONDS for the app to finish its requests, then removes
 * it. Run once whatever sent requests to the old slot no longer does.
 */
export function renderAppRetireScript(stopSeconds: number): string {
  if (!Number.isInteger(stopSeconds) || stopSeconds < 1) throw new Error(`renderAppRetireScript: stopSeconds ${stopSeconds} is not a whole number of seconds`);
  return [
    "set -eu",
    "p=$1",
    "read -r keep",
    'case "$keep" in "$p"-a|"$p"-b) ;; *) echo "not an app slot container: $keep" >&2; exit 1 ;; esac',
    'for c in "$p" "$p-a" "$p-b"; do',
    '  [ "$c" = "$keep" ] && continue',
    '  docker container inspect "$c" >/dev/null 2>&1 || continue',
    `  docker stop -t ${stopSeconds} "$c" >/dev/null`,
    '  docker rm "$c" >/dev/null',
    '  echo "stopped and removed $c"',
    "done",
  ].join("\n");
}

/** `sh -c SCRIPT sh PREFIX`: removes every app container of the host (the stack's destroy). */
export function renderAppRemoveScript(): string {
  return ['p=$1', 'for c in "$p" "$p-a" "$p-b"; do docker rm -f "$c" >/dev/null 2>&1 || true; done'].join("\n");
}
