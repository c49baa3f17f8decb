/**
 * Pieces every service component uses: pulling a pinned image, a file placed
 * on the host (for configuration a service re-reads without a restart), and
 * the settings every container shares.
 */
import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { createHash } from "node:crypto";
import { remoteStep, type HostShell } from "./remote";
import type { MemoryBudget, ServiceName } from "./memory";

export interface HostFileArgs {
  /** Path below the host's files root. */
  path: string;
  content: pulumi.Input<string>;
  /** Octal mode such as "0644" or "0600". */
  mode: string;
  /** uid:gid that owns the file (the container user that reads it). */
  owner: string;
  timeoutSeconds: number;
}

/** The absolute path of a file the program keeps on a host. */
export function hostPath(shell: HostShell, path: string): string {
  return `${shell.filesRoot}/${path}`;
}

/**
 * Writes a file on the host atomically (temporary file, then rename into
 * place), with its mode and owner set before it becomes visible. The content
 * travels on standard input, never on a command line. Removed on delete.
 * Rewritten only when its content, mode or owner differ.
 */
export function hostFile(name: string, shell: HostShell, args: HostFileArgs, opts: pulumi.CustomResourceOptions) {
  if (args.path.startsWith("/") || args.path.split("/").includes("..")) throw new Error(`hostFile: ${args.path} must be relative to the host's files root`);
  if (!/^0[0-7]{3}$/.test(args.mode)) throw new Error(`hostFile: mode ${args.mode} is not an octal mode like 0640`);
  if (!/^\d+:\d+$/.test(args.owner)) throw new Error(`hostFile: owner ${args.owner} is not uid:gid`);
  // A file that already has this content, mode and owner is left as it is,
  // modification time included: a run of this step that changes nothing
  // (every step runs again when the host's SSH connection changes, e.g. when
  // an existing fleet first pins its rotated host key, components/Host.ts)
  // must not make PostgreSQL's restart step think postgresql.conf changed
  // after the server started (templates/health-gate.ts, renderRestartIfStaleScript).
  const script =
    'set -eu; d=$(dirname "$1"); mkdir -p "$d"; t="$1.tmp.$$"; (umask 077 && cat > "$t"); chown "$3" "$t" 2>/dev/null || [ "$(id -u)" != 0 ]; chmod "$2" "$t"; ' +
    'if [ -f "$1" ] && [ ! -L "$1" ] && cmp -s "$t" "$1" && [ "$(stat -c %a:%u:%g "$t")" = "$(stat -c %a:%u:%g "$1")" ]; then rm -f "$t"; else mv -f "$t" "$1"; fi';
  const path = hostPath(shell, args.path);
  return remoteStep(
    name,
    shell,
    {
      argv: ["sh", "-c", script, "sh", path, args.mode, args.owner],
      stdin: args.content,
      deleteArgv: ["rm", "-f", path],
      timeoutSeconds: args.timeoutSeconds,
    },
    opts,
  );
}

/** A short, stable digest of some content, for triggers. Not for secrets. */
export function digest(content: string): string {
  return createHash("sha256").update(content).digest("hex").slice(0, 16);
}

export function pullImage(name: string, image: pulumi.Input<string>, opts: pulumi.CustomResourceOptions): docker.RemoteImage {
  return new docker.RemoteImage(name, { name: image, keepLocally: true }, opts);
}

/**
 * Settings shared by every service container. `networkMode` is the host's:
 * "host" on a VPS, "container:<anchor>" when several hosts share one Docker
 * engine. Nothing is published through Docker: each service binds the
 * address it should be reached at.
 */
export function baseContainer(networkMode: pulumi.Input<string>) {
  return {
    restart: "unless-stopped",
    mustRun: true,
    logDriver: "json-file",
    logOpts: { "max-size": "20m", "max-file": "5" },
    networkMode,
    labels: [{ label: "app", value: "synaxic" }],
  };
}

/**
 * A duration as Go's time.Duration prints it ("10s", "1m0s", "1h30m0s"). The
 * Docker provider stores a health check's durations as the text it was given
 * and reads back what Docker reports, which is Go's form
 * (terraform-provider-docker flattenHealthcheck: time.Duration(...).String());
 * any other spelling of the same duration ("60s") is a diff on every preview.
 */
export function goDuration(seconds: number): string {
  if (!Number.isInteger(seconds) || seconds < 0) throw new Error(`goDuration: ${seconds} is not a whole number of seconds`);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

export interface HealthcheckArgs {
  tests: pulumi.Input<string[]>;
  intervalSeconds: number;
  timeoutSeconds: number;
  retries: number;
  startPeriodSeconds?: number;
}

/** A container health check with its durations spelled as Docker reports them. */
export function healthcheck(h: HealthcheckArgs) {
  return {
    tests: h.tests,
    interval: goDuration(h.intervalSeconds),
    timeout: goDuration(h.timeoutSeconds),
    retries: h.retries,
    ...(h.startPeriodSeconds !== undefined ? { startPeriod: goDuration(h.startPeriodSeconds) } : {}),
  };
}

/**
 * argv that runs `run` (a command about a container, e.g. `docker exec`) only
 * while the container is running, and otherwise says `otherwise` and
 * succeeds: a stopped container (fenced, or down after a crash) reads its
 * configuration when it starts, so there is nothing to reload or promote.
 */
export function whenRunning(containerName: string, run: string[], otherwise = `${containerName} is not running: it reads its configuration when it starts`): string[] {
  return [
    "sh",
    "-c",
    'c=$1; msg=$2; shift 2; if [ "$(docker inspect -f "{{.State.Running}}" "$c" 2>/dev/null)" != true ]; then echo "$msg"; exit 0; fi; exec "$@"',
    "sh",
    containerName,
    otherwise,
    ...run,
  ];
}

export interface StopGrace {
  seconds: number;
  /** The signal that asks for a graceful stop, when it is not the image's SIGTERM. */
  signal?: string;
}

/**
 * How long each service gets to stop cleanly before it is killed, on
 * `docker stop`, a daemon shutdown, and on replace or destroy. The Docker
 * provider stops a container with a timeout of 0 (SIGKILL at once) unless
 * destroy_grace_seconds is set (terraform-provider-docker,
 * resource_docker_container_funcs.go, resourceDockerContainerDelete), so it
 * is set on every service container, with Docker's own stop timeout.
 */
export const STOP_GRACE = {
  // Redis waits up to its shutdown-timeout (10 s) for replicas to catch up,
  // then fsyncs the AOF (redis.conf, SHUTDOWN): room for both.
  redis: { seconds: 30 },
  // Spring Boot finishes in-flight requests on SIGTERM (graceful shutdown,
  // 30 s per phase by default).
  app: { seconds: 45 },
  // SIGQUIT is nginx's graceful shutdown (SIGTERM is its fast one): open
  // connections finish their requests (nginx docs, "Controlling nginx").
  nginx: { seconds: 30, signal: "SIGQUIT" },
  // The TSDB head is written out on shutdown.
  prometheus: { seconds: 60 },
  grafana: { seconds: 20 },
  exporter: { seconds: 10 },
  // The scheduler's bash defers SIGTERM until a running pgBackRest command
  // ends; one cut short resumes at the next backup (pgBackRest's resume).
  backup: { seconds: 30 },
} as const satisfies Record<string, StopGrace>;

/** Container settings for a graceful stop (see STOP_GRACE). */
export function stopGrace(g: StopGrace) {
  return { stopTimeout: g.seconds, destroyGraceSeconds: g.seconds, ...(g.signal ? { stopSignal: g.signal } : {}) };
}

/**
 * A container's memory limit from the host's budget (lib/memory.ts), in MB
 * as the Docker provider takes it, with swap set to the same value: the
 * budget is RAM, so a container does not swap. Set explicitly because the
 * provider reads memory_swap back (Docker's default is twice the limit) and
 * the attribute is not computed, so leaving it out is a diff on every
 * preview (terraform-provider-docker, resource_docker_container.go
 * "memory_swap": Optional only; _funcs.go read sets it from HostConfig).
 */
export function memoryLimit(budget: MemoryBudget, service: ServiceName): { memory: number; memorySwap: number } {
  const mib = budget.limitsMiB[service];
  if (mib === undefined) throw new Error(`memoryLimit: the ${service} service has no share of this host's memory budget`);
  return withoutSwap(mib);
}

/** A memory limit in MB with no swap beyond it (see memoryLimit). */
export function withoutSwap(mib: number): { memory: number; memorySwap: number } {
  return { memory: mib, memorySwap: mib };
}

/** Containers have fixed names: replace them by deleting the old one first. */
export const replaceInPlace: pulumi.CustomResourceOptions = { deleteBeforeReplace: true };

export interface Upload {
  file: string;
  content?: pulumi.Input<string>;
  contentBase64?: pulumi.Input<string>;
  /** Octal permissions, e.g. "0600". */
  permissions: string;
  owner?: string;
  group?: string;
  executable?: boolean;
}

/** An upload into a container before it starts; secret content stays secret. */
export function upload(file: string, content: pulumi.Input<string>, permissions: string, uid: number, gid = uid): Upload {
  return { file, content, permissions, owner: String(uid), group: String(gid) };
}
