/**
 * What the fleet command runs on a host, as argv arrays (turned into one
 * command line by lib/shell.ts when ssh sends them). No secret is ever in
 * one: the Redis password reaches redis-cli as REDISCLI_AUTH in its
 * environment (redis-cli.c reads REDIS_CLI_AUTH_ENV "REDISCLI_AUTH"), put
 * there by `docker exec -e REDISCLI_AUTH`: an -e without a value takes the
 * value from the docker CLI's own environment (docker/cli
 * cli/command/container/exec.go NewExecOptions: opts.ValidateEnv;
 * opts/env.go ValidateEnv: os.LookupEnv). That environment gets it from
 * standard input or from a 0600 file on the host's tmpfs, never from argv.
 */
import { containerName } from "../addresses";
import { REDIS_CONTAINER_PATHS } from "../../templates/redis";
import { UsageError } from "../status/errors";

/** The services the fleet runs on a host, each in container synaxic-<host>-<service>. */
export const FLEET_SERVICES = [
  "postgres",
  "redis",
  "app",
  "nginx",
  "prometheus",
  "alertmanager",
  "grafana",
  "node-exporter",
  "postgres-exporter",
  "redis-exporter",
  "pgbackrest",
  "backup",
  "redis-backup",
] as const;
export type FleetService = (typeof FLEET_SERVICES)[number];

export function fleetService(name: string): FleetService {
  if (!(FLEET_SERVICES as readonly string[]).includes(name)) {
    throw new UsageError(`${JSON.stringify(name)} is not a service of the fleet (one of: ${FLEET_SERVICES.join(", ")})`);
  }
  return name as FleetService;
}

/**
 * argv that runs `docker ARGS... CONTAINER` on a service's container. The
 * app's container is synaxic-<host>-app-a or -app-b (its deploy slot,
 * templates/app.ts): the one running is looked up on the host first.
 */
function onServiceContainer(host: string, service: FleetService, dockerArgs: string[]): string[] {
  if (service !== "app") return ["docker", ...dockerArgs, containerName(host, service)];
  const prefix = containerName(host, "app");
  return [
    "sh",
    "-c",
    'p=$1; shift; c=$(docker ps --filter "name=^/?$p-[ab]$" --format "{{.Names}}" | head -n 1); if [ -z "$c" ]; then echo "no app container runs on this host ($p-a or $p-b)" >&2; exit 1; fi; exec docker "$@" "$c"',
    "sh",
    prefix,
    ...dockerArgs,
  ];
}

/** `docker logs` of a service's container. */
export function logsArgv(host: string, service: FleetService, opts: { tail: number | "all"; follow: boolean; timestamps: boolean }): string[] {
  return onServiceContainer(host, service, [
    "logs",
    "--tail",
    String(opts.tail),
    ...(opts.follow ? ["--follow"] : []),
    ...(opts.timestamps ? ["--timestamps"] : []),
  ]);
}

/** `docker restart` of a service's container. */
export function restartArgv(host: string, service: FleetService, opts: { stopTimeoutSeconds?: number } = {}): string[] {
  return onServiceContainer(host, service, ["restart", ...(opts.stopTimeoutSeconds !== undefined ? ["--time", String(opts.stopTimeoutSeconds)] : [])]);
}

/** docker exec's flags: -i always (stdin attached), -t only when our own stdin is a terminal. */
function execFlags(tty: boolean): string[] {
  return tty ? ["-i", "-t"] : ["-i"];
}

/** An interactive psql as postgres (peer over the local socket) in the host's PostgreSQL container. */
export function psqlSessionArgv(host: string, opts: { port: number; database: string; tty: boolean; args?: readonly string[] }): string[] {
  return ["docker", "exec", ...execFlags(opts.tty), "-u", "postgres", containerName(host, "postgres"), "psql", `--port=${opts.port}`, `--dbname=${opts.database}`, ...(opts.args ?? [])];
}

/** redis-cli over TLS on the host's loopback, as the ACL admin user; the password comes from REDISCLI_AUTH. */
export function redisCliArgv(opts: { port: number; user: string; args?: readonly string[] }): string[] {
  return ["redis-cli", "--tls", "--cacert", REDIS_CONTAINER_PATHS.caFile, "-h", "127.0.0.1", "-p", String(opts.port), "--user", opts.user, "--no-auth-warning", ...(opts.args ?? [])];
}

/** docker exec of redis-cli in the host's Redis container, passing REDISCLI_AUTH through by name. */
export function redisSessionDockerArgv(host: string, opts: { port: number; user: string; tty: boolean; args?: readonly string[] }): string[] {
  return ["docker", "exec", ...execFlags(opts.tty), "-e", "REDISCLI_AUTH", containerName(host, "redis"), ...redisCliArgv(opts)];
}

/**
 * Without a terminal: the password is the first line of standard input; the
 * rest of it goes on to redis-cli. `read` stops at the newline (POSIX: read
 * consumes no input beyond it on a pipe).
 */
export function redisFromStdinArgv(dockerArgv: readonly string[]): string[] {
  return ["sh", "-c", 'IFS= read -r REDISCLI_AUTH || [ -n "$REDISCLI_AUTH" ] || { echo "no password on standard input" >&2; exit 2; }; export REDISCLI_AUTH; exec "$@"', "sh", ...dockerArgv];
}

/** Where the terminal session's password file goes: a private directory on tmpfs when there is one. */
const STASH_SCRIPT =
  'umask 077; d=$(mktemp -d /dev/shm/synaxic-fleet.XXXXXXXX 2>/dev/null || mktemp -d /tmp/synaxic-fleet.XXXXXXXX) || exit 1; cat > "$d/auth" || { rm -rf -- "$d"; exit 1; }; printf "%s\\n" "$d/auth"';

/** With a terminal, step 1: stores standard input (the password) in a new 0600 file and prints its path. */
export function stashArgv(): string[] {
  return ["sh", "-c", STASH_SCRIPT];
}

const STASHED = /^\/(dev\/shm|tmp)\/synaxic-fleet\.[A-Za-z0-9]{8}\/auth$/;

/** Checks the path step 1 printed. */
export function stashedPath(stdout: string): string {
  const p = stdout.trim();
  if (!STASHED.test(p)) throw new Error(`unexpected answer from the host when storing the session's password: ${JSON.stringify(p.slice(0, 120))}`);
  return p;
}

/** With a terminal, step 2: reads the file into REDISCLI_AUTH, removes it, then runs docker exec -it. */
export function redisFromFileArgv(file: string, dockerArgv: readonly string[]): string[] {
  if (!STASHED.test(file)) throw new Error(`not a session password file: ${file}`);
  return ["sh", "-c", 'f=$1; shift; REDISCLI_AUTH=$(cat -- "$f") || exit 2; rm -rf -- "${f%/auth}"; export REDISCLI_AUTH; exec "$@"', "sh", file, ...dockerArgv];
}

/** Removes the file of step 1 if step 2 never ran. */
export function unstashArgv(file: string): string[] {
  if (!STASHED.test(file)) throw new Error(`not a session password file: ${file}`);
  return ["rm", "-rf", "--", file.slice(0, -"/auth".length)];
}
