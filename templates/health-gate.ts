/**
 * The health gate: run on the host after a container is created, it waits
 * until the container is healthy (and, optionally, until a check command run
 * in it passes), and fails fast, with the container's last log lines, when
 * the container exits or keeps restarting. A replica whose bootstrap fails
 * is then an error within seconds that says why, instead of a wait until the
 * provider's timeout (the Docker provider polls for "healthy" and reports
 * only that it was not: terraform-provider-docker resourceDockerContainerCreate,
 * waitForHealthyState).
 */
import { shellQuote } from "../lib/shell";

export interface HealthGateParams {
  containerName: string;
  /** How long a slow but live start may take (a replica's first clone), in seconds. */
  timeoutSeconds: number;
  /** Restarts that count as a crash loop. */
  maxRestarts?: number;
  /** argv run with `docker exec` in the container once it is healthy; the gate passes when it prints `expect`. */
  check?: { argv: string[]; expect: string; what: string; user?: string };
  /** Log lines shown when the gate fails. */
  logLines?: number;
}

export function renderHealthGateScript(p: HealthGateParams): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(p.containerName)) throw new Error(`renderHealthGateScript: ${JSON.stringify(p.containerName)} is not a container name`);
  const t = Math.floor(p.timeoutSeconds);
  if (!(t > 0)) throw new Error("renderHealthGateScript: timeoutSeconds must be positive");
  const maxRestarts = p.maxRestarts ?? 2;
  const lines = p.logLines ?? 40;
  const check = p.check
    ? `  out=$(docker exec ${p.check.user ? `-u ${shellQuote(p.check.user)} ` : ""}"$C" ${p.check.argv.map(shellQuote).join(" ")} 2>&1) || true
  if [ "$out" = ${shellQuote(p.check.expect)} ]; then echo "$C: healthy, ${p.check.what}"; exit 0; fi
  last_check="$out"`
    : `  echo "$C: healthy"; exit 0`;
  return `#!/bin/sh
set -u
C=${shellQuote(p.containerName)}
deadline=$(( $(date +%s) + ${t} ))
last_check=""
fail() {
  echo "$C: $1" >&2
  echo "--- last ${lines} log lines of $C:" >&2
  docker logs --tail ${lines} "$C" >&2 2>&1 || true
  exit 1
}
while :; do
  state=$(docker inspect -f '{{.State.Status}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$C" 2>/dev/null) || fail "no such container"
  set -- $state
  status=$1 restarts=$2 health=$3
  case "$status" in
    exited|dead) fail "exited instead of becoming healthy" ;;
  esac
  [ "$restarts" -ge ${maxRestarts} ] && fail "restarted $restarts times instead of becoming healthy"
  if [ "$health" = healthy ]; then
${check}
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    [ -n "$last_check" ] && echo "$C: last check said: $last_check" >&2
    fail "not ${p.check ? `${p.check.what} ` : "healthy "}after ${t}s (health: $health)"
  fi
  sleep 2
done
`;
}

export interface RestartIfStaleParams {
  containerName: string;
  /** The configuration file on the host whose change needs a restart. */
  file: string;
  /** What changed, for the log line. */
  settings: string[];
  /** The health gate to run afterwards (renderHealthGateScript). */
  gate: string;
}

/**
 * Restarts a running container that started before `file` was last
 * written (so it still runs the old settings), then runs the gate. A
 * container started after the file changed, or not running, is left alone.
 */
export function renderRestartIfStaleScript(p: RestartIfStaleParams): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(p.containerName)) throw new Error(`renderRestartIfStaleScript: ${JSON.stringify(p.containerName)} is not a container name`);
  if (!/^\/[A-Za-z0-9_./-]+$/.test(p.file)) throw new Error(`renderRestartIfStaleScript: ${JSON.stringify(p.file)} is not a plain absolute path`);
  const settings = p.settings.filter((s) => /^[a-z_]+$/.test(s)).join(", ");
  return `#!/bin/sh
set -eu
if [ "$(docker inspect -f '{{.State.Running}}' ${shellQuote(p.containerName)} 2>/dev/null)" = true ]; then
  started=$(date -d "$(docker inspect -f '{{.State.StartedAt}}' ${shellQuote(p.containerName)})" +%s)
  written=$(stat -c %Y ${shellQuote(p.file)})
  if [ "$written" -gt "$started" ]; then
    docker restart --time 120 ${shellQuote(p.containerName)} >/dev/null
    echo ${shellQuote(`${p.containerName} restarted: a setting read only at start changed (one of ${settings})`)}
  else
    echo ${shellQuote(`${p.containerName} started with the current settings`)}
  fi
fi
set +e
${p.gate.replace(/^#!\/bin\/sh\n/, "")}`;
}
