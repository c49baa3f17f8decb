/**
 * Fencing a former primary (lib/control.ts): the commands the control stack
 * runs. Pure functions from typed parameters to text.
 */
import { containerName } from "../lib/addresses";

/**
 * The containers that take writes on a host, in the order they are stopped:
 * the writing app first (both deploy slots), so that no write is acknowledged after the fence
 * starts; Redis, which every app writes (replica apps included); PostgreSQL
 * last, whose clean shutdown ends with the walsenders sending the last WAL
 * (the shutdown checkpoint included) to the standbys that are connected: a
 * walsender exits only once the standby reports it flushed everything sent
 * (PostgreSQL, src/backend/replication/walsender.c, WalSndDone). The
 * balancer keeps running: it takes no write itself, and once the host's next
 * `pulumi up` points it at the new primary's app it serves the clients that
 * still reach this host.
 */
export function fencedContainers(hostName: string): string[] {
  // The writing app in either deploy slot (templates/app.ts), and under the name an earlier version of the program gave it.
  return ["app-a", "app-b", "app", "redis", "postgres"].map((s) => containerName(hostName, s));
}

/**
 * A POSIX shell script for `sh -c SCRIPT sh CONTAINER...`: keeps every named
 * container from restarting (restart policy "no", so a reboot of the host
 * does not bring a writable primary back), stops each that exists in order
 * (docker stop waits for the container's own stop timeout, the grace period
 * the program gives PostgreSQL), then fails unless none is running.
 * Containers that do not exist are skipped (a host half torn down).
 */
export function renderStopScript(): string {
  return [
    "set -u",
    'for c in "$@"; do',
    '  docker container inspect "$c" >/dev/null 2>&1 || continue',
    '  docker update --restart=no "$c" >/dev/null',
    "done",
    'for c in "$@"; do',
    '  docker container inspect "$c" >/dev/null 2>&1 || continue',
    '  docker stop "$c" >/dev/null',
    '  echo "stopped $c"',
    "done",
    'running=""',
    'for c in "$@"; do',
    `  if [ "$(docker container inspect -f '{{.State.Running}}' "$c" 2>/dev/null)" = true ]; then running="$running $c"; fi`,
    "done",
    'if [ -n "$running" ]; then echo "still running:$running" >&2; exit 1; fi',
  ].join("\n");
}

/** Hetzner's API root; HCLOUD_ENDPOINT overrides it as it does for the hcloud CLI and provider. */
export const HCLOUD_ENDPOINT = "https://api.hetzner.cloud/v1";

/**
 * A Node.js program (`node -e PROGRAM SERVER_ID`) that powers a Hetzner
 * server off and waits until Hetzner reports it off. The token comes from
 * the environment (HCLOUD_TOKEN), never from the command line.
 *
 * From Hetzner's official Go client (hcloud-go, hcloud/server.go and
 * action.go): `Poweroff` is `POST /servers/{id}/actions/poweroff` and answers
 * `{"action": {...}}`; an action is read back with `GET /actions/{id}` and
 * its status is running, success or error. A server already off is left as
 * it is (`GET /servers/{id}`: status "off").
 */
export function renderPoweroffProgram(): string {
  return `
const id = process.argv[1];
const token = process.env.HCLOUD_TOKEN;
const base = (process.env.HCLOUD_ENDPOINT || ${JSON.stringify(HCLOUD_ENDPOINT)}).replace(/\\/+$/, "");
if (!/^[0-9]+$/.test(id || "")) { console.error("fence: expected a Hetzner server id, got " + JSON.stringify(id)); process.exit(2); }
if (!token) { console.error("fence: HCLOUD_TOKEN is not set"); process.exit(2); }
const api = async (method, path) => {
  const r = await fetch(base + path, { method, headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" } });
  const text = await r.text();
  if (!r.ok) throw new Error(method + " " + path + ": HTTP " + r.status + " " + text.slice(0, 300));
  return JSON.parse(text);
};
(async () => {
  const server = (await api("GET", "/servers/" + id)).server;
  if (server.status === "off") { console.log("server " + id + " (" + server.name + ") is already off"); return; }
  let action = (await api("POST", "/servers/" + id + "/actions/poweroff")).action;
  const deadline = Date.now() + 300000;
  while (action.status === "running") {
    if (Date.now() > deadline) throw new Error("poweroff of server " + id + " still running after 300 s");
    await new Promise((r) => setTimeout(r, 1000));
    action = (await api("GET", "/actions/" + action.id)).action;
  }
  if (action.status !== "success") throw new Error("poweroff of server " + id + " failed: " + JSON.stringify(action.error));
  console.log("server " + id + " (" + server.name + ") powered off");
})().catch((e) => { console.error("fence: " + e.message); process.exit(1); });
`.trim();
}
