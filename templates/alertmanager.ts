/**
 * Alertmanager's configuration (alertmanager.yml) for Synaxic: who hears of
 * an alert, when, and what stays quiet.
 *
 * - Receivers come from stack config: email (SMTP), Slack, a generic webhook,
 *   and a heartbeat URL for the Watchdog (dead man's switch). Each person-
 *   facing channel takes alerts from a minimum severity up.
 * - Routing: the Watchdog goes only to the heartbeat receiver, often; then one
 *   route per severity. Alerts are grouped per host and replica.
 * - Inhibition: a replica that is disconnected (its slot inactive, missing or
 *   lost) silences its own lag and WAL-retention alerts, matched on the
 *   `replica` label that every per-replica rule carries (templates/
 *   prometheus.ts); a critical certificate or disk alert silences its warning.
 *
 * Secrets and Alertmanager 0.25 (the pinned version; source read at tag
 * v0.25.0):
 * - the SMTP password: `auth_password_file` (config/notifiers.go EmailConfig;
 *   notify/email/email.go reads the file on every send);
 * - the Slack URL: `api_url_file` (config/notifiers.go SlackConfig;
 *   notify/slack/slack.go reads it on every notification);
 * - webhook URLs (the generic webhook and the heartbeat): 0.25 has no file
 *   option (WebhookConfig holds `url` only; `url_file` came with v0.26.0,
 *   prometheus/alertmanager#3223), and the URL type is not a SecretURL, so
 *   they must be written into alertmanager.yml itself. The caller therefore
 *   treats the whole rendered file as a secret: a 0600 file owned by the
 *   container's user, a Pulumi secret in state. Alertmanager's own status API
 *   (GET /api/v2/status) shows these URLs, which is why it listens on
 *   loopback only.
 */
import { stringify } from "yaml";

export type Severity = "critical" | "warning";

/** The alert that always fires (templates/prometheus.ts renders its rule). */
export const WATCHDOG_ALERT = "Watchdog";

/** Receiver names in the rendered configuration. */
export const RECEIVERS = {
  critical: "synaxic-critical",
  warning: "synaxic-warning",
  heartbeat: "synaxic-heartbeat",
} as const;

/** Labels alerts are grouped by: one notification per host, and per replica for a replica's alerts. */
export const GROUP_BY = ["host", "replica"] as const;

/**
 * Per-replica alerts that a disconnected replica explains: while its slot is
 * inactive (the replica is down or cut off), missing, or lost, its lag and
 * the WAL its slot retains say nothing new.
 */
export const REPLICA_DOWN_ALERTS = ["SynaxicReplicaDisconnected", "SynaxicReplicationSlotMissing", "SynaxicSlotLost"] as const;
export const REPLICA_LAG_ALERTS = ["SynaxicReplicationLagBytes", "SynaxicReplicationReplayLag", "SynaxicSlotRetainingWal"] as const;

/** The Slack message body: one line per alert with its name, severity and summary (Go template). */
export const SLACK_TEXT = '{{ range .Alerts }}*{{ .Labels.alertname }}* ({{ .Labels.severity }}): {{ .Annotations.summary }}\n{{ end }}';

export interface EmailReceiver {
  /** SMTP server as host:port (587 for STARTTLS submission). */
  smarthost: string;
  from: string;
  to: readonly string[];
  /** Empty or absent: send without authenticating. */
  authUsername?: string;
  /** Path of the password file as Alertmanager sees it (required with authUsername). */
  authPasswordFile?: string;
  /** Refuse a server that does not offer STARTTLS (Alertmanager's default: true). */
  requireTls?: boolean;
  minSeverity?: Severity;
}

export interface SlackReceiver {
  /** Path of the file holding the incoming-webhook URL, as Alertmanager sees it. */
  apiUrlFile: string;
  /** Optional channel override such as #ops or @someone. */
  channel?: string;
  minSeverity?: Severity;
}

export interface WebhookReceiver {
  /** Secret: written into the configuration (see the file comment). */
  url: string;
  minSeverity?: Severity;
}

export interface HeartbeatReceiver {
  /** Secret: written into the configuration (see the file comment). */
  url: string;
  /** How often the Watchdog is sent to it (its route's group_interval); at least 2s. */
  interval?: string;
}

export interface AlertmanagerConfigParams {
  email?: EmailReceiver;
  slack?: SlackReceiver;
  webhook?: WebhookReceiver;
  heartbeat?: HeartbeatReceiver;
  groupWait?: string;
  groupInterval?: string;
  /** How often a still-firing warning is repeated. */
  repeatInterval?: string;
  /** How often a still-firing critical alert is repeated. */
  criticalRepeatInterval?: string;
}

export const ALERTMANAGER_DEFAULTS = {
  groupWait: "30s",
  groupInterval: "5m",
  repeatInterval: "4h",
  criticalRepeatInterval: "1h",
  heartbeatInterval: "1m",
  minSeverity: { email: "critical", slack: "warning", webhook: "warning" } as Record<"email" | "slack" | "webhook", Severity>,
};

function fail(message: string): never {
  throw new Error(`renderAlertmanagerConfig: ${message}`);
}

const DURATION = /^(\d+(ms|s|m|h|d|w|y))+$/;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 604800e3, y: 31536000e3 };
// A plain address; no display names, so nothing needs quoting in a header.
const EMAIL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const SMARTHOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):(\d{1,5})$/;
const CHANNEL = /^[#@][A-Za-z0-9._-]{1,80}$/;
const FILE = /^\/[A-Za-z0-9._/-]+$/;

function durationMs(what: string, v: string): number {
  if (typeof v !== "string" || !DURATION.test(v)) fail(`${what} must be a duration such as 30s, 5m or 4h, got ${JSON.stringify(v)}`);
  let total = 0;
  for (const m of v.matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)) total += Number(m[1]) * DURATION_MS[m[2]!]!;
  if (total <= 0) fail(`${what} must be longer than zero, got ${JSON.stringify(v)}`);
  return total;
}

function checkUrl(what: string, v: string): void {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    fail(`${what} must be an http(s) URL`);
  }
  // The value is secret: the error names the key, never the value.
  if (u.protocol !== "https:" && u.protocol !== "http:") fail(`${what} must be an http(s) URL`);
  if (/\s/.test(v)) fail(`${what} must not contain whitespace`);
}

function checkSeverity(what: string, v: Severity | undefined): void {
  if (v !== undefined && v !== "critical" && v !== "warning") fail(`${what} must be critical or warning, got ${JSON.stringify(v)}`);
}

/** Half a duration, as a duration (in ms when it is not whole seconds). */
function halfDuration(v: string): string {
  const ms = Math.floor(durationMs("duration", v) / 2);
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** The severities a channel with this minimum takes. */
export function severitiesFrom(min: Severity): Severity[] {
  return min === "critical" ? ["critical"] : ["critical", "warning"];
}

/** A matcher in Alertmanager's matcher syntax (label="value", value quoted as a Go string). */
function eq(label: string, value: string): string {
  return `${label}=${JSON.stringify(value)}`;
}

function re(label: string, values: readonly string[]): string {
  return `${label}=~${JSON.stringify(values.join("|"))}`;
}

/** Renders alertmanager.yml. Holds the webhook URLs when given: treat the result as a secret. */
export function renderAlertmanagerConfig(params: AlertmanagerConfigParams = {}): string {
  const p = params;
  const groupWait = p.groupWait ?? ALERTMANAGER_DEFAULTS.groupWait;
  const groupInterval = p.groupInterval ?? ALERTMANAGER_DEFAULTS.groupInterval;
  const repeatInterval = p.repeatInterval ?? ALERTMANAGER_DEFAULTS.repeatInterval;
  const criticalRepeatInterval = p.criticalRepeatInterval ?? ALERTMANAGER_DEFAULTS.criticalRepeatInterval;
  durationMs("groupWait", groupWait);
  const gi = durationMs("groupInterval", groupInterval);
  if (durationMs("repeatInterval", repeatInterval) < gi) fail(`repeatInterval ${repeatInterval} is shorter than groupInterval ${groupInterval}; notifications repeat at most once per group interval`);
  if (durationMs("criticalRepeatInterval", criticalRepeatInterval) < gi) fail(`criticalRepeatInterval ${criticalRepeatInterval} is shorter than groupInterval ${groupInterval}`);

  const perSeverity: Record<Severity, { email_configs?: unknown[]; slack_configs?: unknown[]; webhook_configs?: unknown[] }> = { critical: {}, warning: {} };
  const add = (min: Severity, kind: "email_configs" | "slack_configs" | "webhook_configs", cfg: unknown) => {
    for (const s of severitiesFrom(min)) (perSeverity[s][kind] ??= []).push(cfg);
  };

  if (p.email) {
    const e = p.email;
    const m = typeof e.smarthost === "string" ? SMARTHOST.exec(e.smarthost) : null;
    if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) fail(`email.smarthost must be host:port such as smtp.example.com:587, got ${JSON.stringify(e.smarthost)}`);
    if (typeof e.from !== "string" || !EMAIL.test(e.from)) fail(`email.from must be an address such as alerts@example.com, got ${JSON.stringify(e.from)}`);
    if (!Array.isArray(e.to) || e.to.length === 0) fail("email.to must list at least one address");
    for (const t of e.to) if (typeof t !== "string" || !EMAIL.test(t)) fail(`email.to has an invalid address ${JSON.stringify(t)}`);
    if (e.authUsername && !e.authPasswordFile) fail("email.authUsername needs email.authPasswordFile");
    if (!e.authUsername && e.authPasswordFile) fail("email.authPasswordFile needs email.authUsername");
    if (e.authUsername !== undefined && /[\s\0]/.test(e.authUsername)) fail("email.authUsername must not contain whitespace");
    if (e.authPasswordFile && !FILE.test(e.authPasswordFile)) fail(`email.authPasswordFile must be an absolute path, got ${JSON.stringify(e.authPasswordFile)}`);
    checkSeverity("email.minSeverity", e.minSeverity);
    add(e.minSeverity ?? ALERTMANAGER_DEFAULTS.minSeverity.email, "email_configs", {
      to: e.to.join(", "),
      from: e.from,
      smarthost: e.smarthost,
      ...(e.authUsername ? { auth_username: e.authUsername, auth_password_file: e.authPasswordFile } : {}),
      require_tls: e.requireTls ?? true,
      send_resolved: true,
    });
  }
  if (p.slack) {
    const s = p.slack;
    if (typeof s.apiUrlFile !== "string" || !FILE.test(s.apiUrlFile)) fail(`slack.apiUrlFile must be an absolute path, got ${JSON.stringify(s.apiUrlFile)}`);
    if (s.channel !== undefined && s.channel !== "" && !CHANNEL.test(s.channel)) fail(`slack.channel must be like #ops or @someone, got ${JSON.stringify(s.channel)}`);
    checkSeverity("slack.minSeverity", s.minSeverity);
    add(s.minSeverity ?? ALERTMANAGER_DEFAULTS.minSeverity.slack, "slack_configs", {
      api_url_file: s.apiUrlFile,
      ...(s.channel ? { channel: s.channel } : {}),
      // Alertmanager's default text is empty: list each alert's summary.
      text: SLACK_TEXT,
      send_resolved: true,
    });
  }
  if (p.webhook) {
    checkUrl("webhook.url", p.webhook.url);
    checkSeverity("webhook.minSeverity", p.webhook.minSeverity);
    add(p.webhook.minSeverity ?? ALERTMANAGER_DEFAULTS.minSeverity.webhook, "webhook_configs", { url: p.webhook.url, send_resolved: true });
  }
  let heartbeatInterval = ALERTMANAGER_DEFAULTS.heartbeatInterval;
  if (p.heartbeat) {
    checkUrl("heartbeat.url", p.heartbeat.url);
    heartbeatInterval = p.heartbeat.interval ?? heartbeatInterval;
    if (durationMs("heartbeat.interval", heartbeatInterval) < 2000) fail(`heartbeat.interval must be at least 2s, got ${JSON.stringify(heartbeatInterval)}`);
  }

  const config = {
    route: {
      // Anything without a known severity is treated as critical: nothing is dropped.
      receiver: RECEIVERS.critical,
      group_by: [...GROUP_BY],
      group_wait: groupWait,
      group_interval: groupInterval,
      repeat_interval: repeatInterval,
      routes: [
        {
          // The dead man's switch: only to the heartbeat (a receiver without
          // configurations when none is set), sent every interval.
          receiver: RECEIVERS.heartbeat,
          matchers: [eq("alertname", WATCHDOG_ALERT)],
          group_by: ["alertname"],
          group_wait: "0s",
          group_interval: heartbeatInterval,
          // Shorter than the group interval on purpose: a flush re-sends when
          // the last notification is older than repeat_interval
          // (notify/notify.go DedupStage.needsUpdate, v0.25.0), and the last
          // one was logged a moment after the previous flush, so an equal
          // repeat_interval would skip every other flush.
          repeat_interval: halfDuration(heartbeatInterval),
        },
        { receiver: RECEIVERS.critical, matchers: [eq("severity", "critical")], repeat_interval: criticalRepeatInterval },
        { receiver: RECEIVERS.warning, matchers: [eq("severity", "warning")] },
      ],
    },
    inhibit_rules: [
      {
        // A disconnected replica silences its own lag and retention alerts.
        // Every rule on both sides carries `replica`; an alert without it on
        // both sides would count as equal and be silenced by any replica's.
        source_matchers: [re("alertname", REPLICA_DOWN_ALERTS)],
        target_matchers: [re("alertname", REPLICA_LAG_ALERTS)],
        equal: ["replica"],
      },
      {
        source_matchers: [eq("alertname", "SynaxicCertificateExpiryCritical")],
        target_matchers: [eq("alertname", "SynaxicCertificateExpiringSoon")],
        equal: ["host", "name"],
      },
      {
        source_matchers: [eq("alertname", "SynaxicDiskSpaceLow")],
        target_matchers: [eq("alertname", "SynaxicDiskFillingUp")],
        equal: ["host", "mountpoint"],
      },
    ],
    receivers: [
      { name: RECEIVERS.critical, ...perSeverity.critical },
      { name: RECEIVERS.warning, ...perSeverity.warning },
      {
        name: RECEIVERS.heartbeat,
        ...(p.heartbeat ? { webhook_configs: [{ url: p.heartbeat.url, send_resolved: false, max_alerts: 1 }] } : {}),
      },
    ],
  };
  return `# alertmanager.yml for Synaxic (rendered; edits are overwritten).\n${stringify(config, { lineWidth: 0, aliasDuplicateObjects: false })}`;
}

// ---------------------------------------------------------------------------
// The cluster (a pair of Alertmanagers on two hosts)
// ---------------------------------------------------------------------------

/** Alertmanager's default gossip port (cmd/alertmanager/main.go, v0.25.0: --cluster.listen-address 0.0.0.0:9094). */
export const DEFAULT_CLUSTER_PORT = 9094;

/**
 * How long a member waits per position in the member list before it
 * notifies (--cluster.peer-timeout; Alertmanager's default, set explicitly).
 * A route whose repeat_interval is not longer than this is notified by both
 * members: the heartbeat's interval must exceed twice this (lib/config.ts).
 */
export const ALERTMANAGER_PEER_TIMEOUT_SECONDS = 15;

export interface ClusterParams {
  /** This Alertmanager's private address: gossip binds there, never to 0.0.0.0. */
  address: string;
  port: number;
  /** The other members' private addresses (gossip on the same port). */
  peers: readonly string[];
  /** --cluster.peer-timeout; default ALERTMANAGER_PEER_TIMEOUT_SECONDS (tests shorten it). */
  peerTimeout?: string;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * The --cluster.* flags of one member of an Alertmanager cluster, or the
 * flag that turns clustering off when there is no peer.
 *
 * What the cluster does (Alertmanager v0.25.0, source read at that tag):
 * - members gossip their notification log and silences over memberlist
 *   (cluster/cluster.go); every member gets every alert from every
 *   Prometheus (README "High Availability": "point Prometheus to a list of
 *   all Alertmanagers");
 * - before notifying, a member waits its position in the member list times
 *   --cluster.peer-timeout (default 15s; cmd/alertmanager/main.go
 *   clusterWait, cluster.Peer.Position), then skips what the notification
 *   log says another member already sent (notify/notify.go WaitStage,
 *   DedupStage): one notification per group, from the first member alive;
 * - bound to a specific address, that address is also the one advertised
 *   to peers (cluster/advertise.go calculateAdvertiseAddress), so no
 *   --cluster.advertise-address is needed;
 * - gossip uses both TCP and UDP on the port (README: "Both UDP and TCP are
 *   needed"); it is plain text unless --cluster.tls-config is given, which
 *   0.25 marks [EXPERIMENTAL] (mutual TLS, added in v0.24.0 by
 *   prometheus/alertmanager#2237). This fleet keeps it on the private
 *   network with both ports firewalled to the peer only.
 * Each member names every other as --cluster.peer, so whichever starts
 * second joins the first; one that starts alone keeps retrying to reach its
 * peers (--cluster.reconnect-interval, 10s) for --cluster.reconnect-timeout
 * (6h) after losing them.
 */
export function alertmanagerClusterFlags(params?: ClusterParams): string[] {
  // No cluster: gossip would listen on 0.0.0.0:9094 by default
  // (cmd/alertmanager/main.go, v0.25.0: "Set to empty string to disable HA mode").
  if (!params) return ["--cluster.listen-address="];
  const { address, port, peers } = params;
  const peerTimeout = params.peerTimeout ?? `${ALERTMANAGER_PEER_TIMEOUT_SECONDS}s`;
  durationMs("cluster.peerTimeout", peerTimeout);
  if (typeof address !== "string" || !IPV4.test(address)) fail(`cluster.address must be an IPv4 address, got ${JSON.stringify(address)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`cluster.port must be a port number 1-65535, got ${port}`);
  if (!Array.isArray(peers) || peers.length === 0) fail("cluster.peers must list at least one other member");
  for (const p of peers) {
    if (typeof p !== "string" || !IPV4.test(p)) fail(`cluster.peers has an invalid address ${JSON.stringify(p)}`);
    if (p === address) fail(`cluster.peers lists this member's own address ${p}`);
  }
  if (new Set(peers).size !== peers.length) fail("cluster.peers lists an address twice");
  return [`--cluster.listen-address=${address}:${port}`, ...peers.map((p) => `--cluster.peer=${p}:${port}`), `--cluster.peer-timeout=${peerTimeout}`];
}
