/**
 * The load balancer on the main host: nginx in front of every app instance.
 *
 * Reads (GET, HEAD, OPTIONS) are spread round-robin over the main app and
 * every replica app and may be retried on the next instance when one fails.
 * Everything else is a write: it goes to the main app only (the one in write
 * mode, next to the primary database) and is never replayed anywhere else,
 * not even when the app fails mid-request or times out, because a write may
 * already have taken effect.
 *
 * Some requests write although their method reads: the app's login flow
 * creates users and API keys on GET, and every request authenticated by an
 * API key records the key's usage. Those go to the main app too (see
 * DEFAULT_WRITE_PATHS and ApiKeyRequests), because a read-mode app has only
 * its local standby and every write there fails.
 */
import { isIPv6 } from "node:net";

/**
 * Path prefixes whose GET requests write, so they go to the main app. From
 * the app's source: Spring Security's OAuth2 login (`/oauth2/authorization/*`
 * starts it and keeps its state in the session; the Google callback
 * `/login/oauth2/code/google` creates the user and the first API key), the
 * login and logout pages, and the account endpoints under `/v1/auth/`
 * (key creation is a POST; their GETs show what the user just changed,
 * which a replica may not have replayed yet).
 */
export const DEFAULT_WRITE_PATHS = ["/oauth2/", "/login/oauth2/code/", "/login", "/logout", "/v1/auth/"] as const;

/**
 * What the balancer lets through to the app from outside (publicPaths): an
 * entry ending in "/" opens every path below it, any other entry that one
 * path only. From the app's source: the routes its SecurityConfig permits
 * without login and the controllers behind them (ViewController's pages,
 * the API under /v1/ whose own filters authenticate, /api/stats), Spring
 * Security's OAuth2 login (/oauth2/authorization/google, the callback under
 * /login/oauth2/code/), springdoc's API documentation, the static files
 * WebConfig serves (/css/, /js/, /assets/ and the pages' .html files), and
 * of the actuator only what the app's own public pages fetch: health.js
 * reads /actuator/health and /actuator/metrics/jvm.memory.used.
 *
 * "/logout" is Spring Security's default logout URL, which balancerWritePaths
 * also names (this app moved it to /v1/auth/logout).
 *
 * Left out on purpose: every other actuator endpoint (prometheus, env,
 * metrics, caches: Prometheus scrapes the apps on the private network),
 * /api/debug/ (RateLimitCheckController, a debugging aid), and the static
 * leftovers dashboard_backup.html and dashboard_old.html.
 */
export const DEFAULT_PUBLIC_PATHS = [
  "/", "/index.html", "/favicon.ico",
  "/health", "/health.html", "/analytics", "/analytics.html", "/dashboard", "/dashboard.html", "/login-success.html",
  "/privacy-policy", "/privacy-policy.html", "/terms-of-service", "/terms-of-service.html", "/fair-use-policy", "/fair-use-policy.html",
  "/css/", "/js/", "/assets/",
  "/v1/", "/api/stats",
  "/login", "/logout", "/oauth2/", "/login/oauth2/code/",
  "/swagger-ui.html", "/swagger-ui/", "/v3/api-docs", "/v3/api-docs/",
  "/actuator/health", "/actuator/metrics/jvm.memory.used",
] as const;

/**
 * Where requests that carry an API key go. The app authenticates a key from
 * `Authorization: ApiKey <key>`, a bare `Authorization: syn_live_...` or
 * `syn_test_...`, or an `X-API-Key` header (ApiKeyAuthFilter), and then
 * records the key's usage in the database (AccountUsageService, run
 * asynchronously; on a standby it only logs an error and the count is lost).
 * - "writer": every such request goes to the main app, so usage is counted
 *   exactly; requests without a key still spread over every app.
 * - "replicas": they spread like any read; usage served by a replica app is
 *   not counted (the operator accepts that loss for read capacity).
 */
export type ApiKeyRequests = "writer" | "replicas";

export interface AppEndpoint {
  /** The host's name, used in comments and error messages. */
  name: string;
  /** host:port (IPv4, DNS name or [IPv6]) where nginx reaches the app. */
  address: string;
  /**
   * The app's other deploy slot (templates/app.ts, APP_SLOTS) on a host whose
   * stack is not this balancer's: listed as a server too, so that a deploy
   * there, which moves the app to that port, needs no change here. Nothing
   * listens on the idle slot's port: nginx gets "connection refused", which
   * it retries on another server whatever the method (the request was not
   * sent), and after max_fails such failures it skips the address for
   * fail_timeout.
   */
  standby?: string;
}

export interface NginxTlsParams {
  /** Certificate chain (PEM) as nginx sees it, e.g. /etc/nginx/tls/fullchain.pem. */
  certFile: string;
  /** Private key (PEM) as nginx sees it. */
  keyFile: string;
  /** HTTPS port nginx listens on; 443 by default. */
  port?: number;
  /**
   * HTTPS port clients connect to, when a port mapping (Docker) puts nginx
   * behind a different one; used in the HTTP->HTTPS redirect and
   * X-Forwarded-Port. Defaults to port.
   */
  publicPort?: number;
  /** Strict-Transport-Security max-age in seconds; 0 leaves the header out. Default one year. */
  hstsMaxAgeSeconds?: number;
}

export interface NginxParams {
  /** The app in write mode on the main host. */
  mainApp: AppEndpoint;
  /** The apps in read mode, one per replica host (may be empty). */
  replicaApps: readonly AppEndpoint[];
  /** Plain HTTP port; 80 by default. With TLS it only redirects to HTTPS. */
  listenPort?: number;
  /** HTTP port clients connect to, when a port mapping differs from listenPort (for X-Forwarded-Port). */
  publicHttpPort?: number;
  /** Also listen on IPv6 ([::]); off by default (Docker networks are often IPv4 only). */
  listenIpv6?: boolean;
  /** HTTPS listener; when given, plain HTTP redirects to it. */
  tls?: NginxTlsParams;
  /**
   * The host names (or IPv4 addresses) clients may ask for in `Host`
   * (a leading "*." matches any subdomain). When given, a request for any
   * other name is answered 421 Misdirected Request by a default server that
   * proxies nothing. Absent or empty: any Host is served.
   */
  serverNames?: readonly string[];
  /**
   * Paths that reach the app from outside (DEFAULT_PUBLIC_PATHS by default):
   * an entry ending in "/" is a prefix, any other an exact path; each starts
   * with "/" and holds only letters, digits and `- . _ ~ /`. Everything else
   * is answered 404 by nginx. Matched case-sensitively against the decoded,
   * normalised path; a path with ";", "\" or "%" left after decoding is
   * refused whatever the list says, and so is any path naming the actuator
   * (in any case) that is not an exact entry.
   */
  publicPaths?: readonly string[];

  /** Worker user; "nginx" (the nginx image's user) by default. Debian's package uses www-data. */
  user?: string;
  /** Default /var/run/nginx.pid, as in the nginx image. Relative paths are relative to the -p prefix. */
  pidFile?: string;
  /** Default /var/log/nginx/error.log (a link to stderr in the nginx image). */
  errorLog?: string;
  errorLogLevel?: "debug" | "info" | "notice" | "warn" | "error" | "crit";
  /** Default /var/log/nginx/access.log (a link to stdout in the nginx image); "off" disables it. */
  accessLog?: string;
  /** Directory for client body and proxy temp files; the compiled-in defaults when absent. */
  tempDir?: string;
  /** Emit `daemon off;` (for running nginx in the foreground without `-g 'daemon off;'`). Default false. */
  foreground?: boolean;
  workerProcesses?: number | "auto";
  /**
   * Connections one worker may have open (clients and upstreams together).
   * By default 1024, or what `concurrency` needs when that is more
   * (workerConnectionsFor); a smaller explicit value is refused.
   */
  workerConnections?: number;
  /**
   * Concurrent client requests the balancer is sized for (the
   * balancerConcurrency setting); default 64. Sizes each upstream group's
   * keep-alive pool (upstreamKeepaliveFor) so that under this load no
   * upstream connection is closed and reopened.
   */
  concurrency?: number;

  /** Passive health check: failures within failTimeout before an instance is skipped for failTimeout. */
  maxFails?: number;
  /** nginx time such as 10s. */
  failTimeout?: string;
  /**
   * One fixed keep-alive pool (idle connections per worker) for both upstream
   * groups instead of the sizing from `concurrency`; before that sizing the
   * balancer ran with 32. For comparisons; leave it out otherwise.
   */
  upstreamKeepalive?: number;
  /**
   * How long nginx keeps an idle upstream connection. Must stay below the
   * app's own keep-alive timeout, or nginx may send a request on a
   * connection the app is closing (a write would then fail with 502).
   */
  upstreamKeepaliveTimeout?: string;
  proxyConnectTimeout?: string;
  proxySendTimeout?: string;
  /** Time to wait for a read's response before trying the next instance. */
  readTimeout?: string;
  /** Time to wait for a write's response; on expiry the client gets 504 and the write is not retried. */
  writeTimeout?: string;
  /** Most instances one read may be tried on (0 = all). */
  readTries?: number;
  /** Total time a read may spend being retried. */
  readRetryTimeout?: string;
  clientMaxBodySize?: string;
  clientBodyTimeout?: string;
  clientHeaderTimeout?: string;
  sendTimeout?: string;
  keepaliveTimeout?: string;
  /** Adds X-Upstream (the instance that answered) to responses; off by default (it shows internal addresses). */
  exposeUpstreamHeader?: boolean;
  /**
   * Requests per second each client address may make, with a burst it may
   * use at once (nginx limit_req, per $binary_remote_addr; 429 past it).
   * Absent: no limit.
   */
  rateLimit?: { perSecond: number; burst: number };
  /**
   * Path prefixes that go to the main app whatever the method
   * (DEFAULT_WRITE_PATHS by default). Each starts with "/" and holds only
   * letters, digits and `- . _ ~ /`; matched against the decoded,
   * normalised path, case-sensitively like the app's own routes.
   */
  writePaths?: readonly string[];
  /** Where requests carrying an API key go (ApiKeyRequests); "writer" by default. */
  apiKeyRequests?: ApiKeyRequests;
}

/** Largest concurrency renderNginxConf accepts (the balancerConcurrency setting's own bound). */
export const MAX_CONCURRENCY = 100_000;

/** The defaults renderNginxConf applies, exported for callers and tests. */
export const NGINX_DEFAULTS = {
  listenPort: 80,
  tlsPort: 443,
  hstsMaxAgeSeconds: 31_536_000,
  user: "nginx",
  pidFile: "/var/run/nginx.pid",
  errorLog: "/var/log/nginx/error.log",
  errorLogLevel: "warn",
  accessLog: "/var/log/nginx/access.log",
  workerProcesses: "auto",
  workerConnections: 1024,
  concurrency: 64,
  maxFails: 3,
  failTimeout: "10s",
  upstreamKeepaliveTimeout: "30s",
  proxyConnectTimeout: "5s",
  proxySendTimeout: "60s",
  readTimeout: "60s",
  writeTimeout: "60s",
  readTries: 3,
  readRetryTimeout: "30s",
  clientMaxBodySize: "10m",
  clientBodyTimeout: "30s",
  clientHeaderTimeout: "30s",
  sendTimeout: "30s",
  keepaliveTimeout: "65s",
} as const;

/** Names of the two upstream groups (also shown in the access log). */
export const WRITE_UPSTREAM = "synaxic_write";
export const READ_UPSTREAM = "synaxic_read";
/** Methods that go to the read upstream; every other method is a write. */
export const READ_METHODS = ["GET", "HEAD", "OPTIONS"] as const;

// ---------------------------------------------------------------------------
// Sizing for the expected concurrency
// ---------------------------------------------------------------------------

/**
 * Idle keep-alive connections one nginx worker keeps for an upstream group
 * (its `keepalive`): `concurrency` for each app in the group.
 *
 * nginx documents the number as per worker and per group: "The connections
 * parameter sets the maximum number of idle keepalive connections to
 * upstream servers that are preserved in the cache of each worker process.
 * When this number is exceeded, the least recently used connections are
 * closed." (ngx_http_upstream_module, `keepalive`). So:
 *
 * - It is not divided by the number of workers (`worker_processes auto`:
 *   one per CPU). accept_mutex is off (nginx's default since 1.11.3, "There
 *   is no need to enable accept_mutex on systems that support the
 *   EPOLLEXCLUSIVE flag"), so whichever worker the kernel wakes accepts the
 *   next client, and clients do not spread evenly: bench/balancer.ts prints
 *   the spread, and has seen 63 of 64 clients on one of two workers. Any
 *   worker must be able to keep an idle connection for every concurrent
 *   request.
 * - It is multiplied by the apps in the group. The cache is shared by the
 *   group's apps, but a cached connection only serves the app it was opened
 *   to: a read sent to an app with no idle connection of its own opens a new
 *   one, and a full cache then closes another app's. A worker never needs
 *   more connections to one app than its concurrent requests, and any app
 *   may carry all of them at some point (round-robin in turn, a slower app
 *   holding more at once, the others' share while they are down), so with
 *   `concurrency` per app the cache holds every connection a worker ever
 *   opens and, while the load stays within `concurrency`, closes none.
 *
 * The pool only keeps connections that were needed once; nginx opens them on
 * demand ("the keepalive directive does not limit the total number of
 * connections to upstream servers that an nginx worker process can open")
 * and closes idle ones after keepalive_timeout.
 */
export function upstreamKeepaliveFor(concurrency: number, apps: number): number {
  return concurrency * apps;
}

/**
 * Connections one worker may need at `concurrency` with `readApps` apps in
 * the read group: every client's, plus every connection the two pools can
 * hold (concurrency per app for reads, concurrency for writes to the main
 * app). nginx's worker_connections counts them all: "this number includes
 * all connections (e.g. connections with proxied servers, among others), not
 * only connections with clients" (ngx_core_module, worker_connections).
 */
export function workerConnectionsFor(concurrency: number, readApps: number): number {
  return concurrency * (1 + readApps + 1);
}

const TLS_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

class NginxParamError extends Error {
  constructor(message: string) {
    super(`renderNginxConf: ${message}`);
    this.name = "NginxParamError";
  }
}

const DNS_NAME = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOST_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Characters that can stand unquoted in an nginx directive without ending or opening anything. */
const SAFE_WORD = /^[A-Za-z0-9_./@:+=,-]+$/;
/** A writePaths entry: a path prefix of plain characters (nothing an nginx regex or directive would read as syntax but "."). */
export const WRITE_PATH = /^\/[A-Za-z0-9._~/-]{0,200}$/;
const NGINX_TIME = /^\d+(ms|s|m|h|d)?$/;
const NGINX_SIZE = /^\d+[kKmMgG]?$/;

/** Whether nginx may take `name` as a server_name here: a host name, "*." and a domain, or an IPv4 address. */
export function isServerName(name: string): boolean {
  return typeof name === "string" && DNS_NAME.test(name.replace(/^\*\./, ""));
}

/** What is wrong with a publicPaths entry, or undefined when it is fine. */
export function publicPathError(path: string): string | undefined {
  if (typeof path !== "string" || !WRITE_PATH.test(path)) return `public path ${JSON.stringify(path)} must start with "/" and hold only letters, digits and - . _ ~ /`;
  if (path.endsWith("/") && /actuator/i.test(path)) {
    return `public path ${JSON.stringify(path)} opens a prefix under the actuator; name each actuator path that must be public exactly (no trailing "/")`;
  }
  return undefined;
}

function checkPort(what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 65535) {
    throw new NginxParamError(`${what} must be a port number 1-65535, got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkInt(what: string, v: number, min: number): number {
  if (!Number.isInteger(v) || v < min) throw new NginxParamError(`${what} must be an integer >= ${min}, got ${v}`);
  return v;
}

function checkTime(what: string, v: string): string {
  if (!NGINX_TIME.test(v)) throw new NginxParamError(`${what} must be an nginx time such as 10s or 500ms, got ${JSON.stringify(v)}`);
  return v;
}

function checkSize(what: string, v: string): string {
  if (!NGINX_SIZE.test(v)) throw new NginxParamError(`${what} must be an nginx size such as 10m, got ${JSON.stringify(v)}`);
  return v;
}

function checkWord(what: string, v: string): string {
  if (!SAFE_WORD.test(v)) {
    throw new NginxParamError(`${what} must be a plain path or word (letters, digits, _ . / @ : + = , -), got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Checks "host:port" and returns it unchanged. */
export function validateUpstreamAddress(address: string): string {
  const m = /^(.*):(\d{1,5})$/.exec(address);
  if (!m) throw new NginxParamError(`upstream address ${JSON.stringify(address)} must be host:port`);
  const host = m[1]!;
  const port = Number(m[2]);
  if (String(port) !== m[2] || port < 1 || port > 65535) {
    throw new NginxParamError(`upstream address ${JSON.stringify(address)} has an invalid port`);
  }
  const isIpv4Shaped = /^[\d.]+$/.test(host);
  const ok = isIpv4Shaped ? IPV4.test(host) : host.startsWith("[") && host.endsWith("]") ? isIPv6(host.slice(1, -1)) : DNS_NAME.test(host);
  if (!ok) throw new NginxParamError(`upstream address ${JSON.stringify(address)} has an invalid host ${JSON.stringify(host)}`);
  return address;
}

function checkEndpoints(main: AppEndpoint, replicas: readonly AppEndpoint[]): void {
  const all = [main, ...replicas];
  const byName = new Map<string, string>();
  const byAddress = new Map<string, string>();
  for (const e of all) {
    if (typeof e?.name !== "string" || !HOST_NAME.test(e.name)) {
      throw new NginxParamError(`app name ${JSON.stringify(e?.name)} must be letters, digits, . _ - (max 63)`);
    }
    const prevName = byName.get(e.name);
    if (prevName !== undefined) throw new NginxParamError(`duplicate app name ${JSON.stringify(e.name)}`);
    byName.set(e.name, e.address);
    for (const address of e.standby === undefined ? [e.address] : [e.address, e.standby]) {
      validateUpstreamAddress(address);
      const key = address.toLowerCase();
      const prev = byAddress.get(key);
      if (prev !== undefined) {
        throw new NginxParamError(`duplicate upstream address ${address} (apps ${prev} and ${e.name})`);
      }
      byAddress.set(key, e.name);
    }
  }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

function upstreamBlock(name: string, members: readonly AppEndpoint[], maxFails: number, failTimeout: string, keepalive: number, keepaliveTimeout: string): string {
  const servers = members.flatMap((m) => [
    `        server ${m.address} max_fails=${maxFails} fail_timeout=${failTimeout};  # ${m.name}`,
    ...(m.standby !== undefined ? [`        server ${m.standby} max_fails=${maxFails} fail_timeout=${failTimeout};  # ${m.name}, its other deploy slot`] : []),
  ]);
  return [
    `    upstream ${name} {`,
    `        zone ${name} 64k;`,
    ...servers,
    `        keepalive ${keepalive};`,
    `        keepalive_timeout ${keepaliveTimeout};`,
    `    }`,
  ].join("\n");
}

/** Escapes what a PCRE pattern would read as syntax in a WRITE_PATH prefix ("." only). */
function prefixRegex(path: string): string {
  return `^${path.replace(/\./g, "\\.")}`;
}

/**
 * The map that decides what reaches the app ($synaxic_refused: 1 = answered
 * 404 by nginx). Every key is a regular expression, so the first that matches
 * decides, in this order (ngx_http_map_module: with no plain-string key,
 * "the first matching regex (in order of appearance)"); plain keys would
 * also match case-insensitively.
 *
 * It reads $uri, the path nginx matched its locations against: "after
 * decoding the text encoded in the %XX form, resolving references to relative
 * path components . and .., and possible compression of two or more adjacent
 * slashes into a single slash" (ngx_http_core_module, location). The app,
 * though, gets the request line as the client sent it ("If proxy_pass is
 * specified without a URI, the request URI is passed to the server in the
 * same form as sent by a client", proxy_pass), and its servlet container
 * resolves that again its own way: Tomcat's CoyoteAdapter.postParseRequest
 * first cuts every path parameter (";" up to the next "/" or ";") out of the
 * raw path, then %-decodes it, then normalises "//", "/./" and "/../". So
 * "/v1/..;/actuator/env", which nginx sees as a path under /v1/, is
 * /actuator/env to the app; and a "%" still in $uri was encoded twice, which
 * only matters to a component that decodes once more. Those paths are refused
 * outright, and so is a backslash (Tomcat answers 400 for one unless
 * allowBackslash turns it into "/"). Once they are gone, nginx's $uri and the
 * container's path agree on every segment (both decode once, then merge
 * slashes and resolve dot segments), and the allow list can be read as prefixes.
 */
function publicMap(publicPaths: readonly string[]): string[] {
  const exact = publicPaths.filter((p) => !p.endsWith("/") || p === "/");
  const prefixes = publicPaths.filter((p) => p.endsWith("/") && p !== "/");
  const escape = (path: string) => path.replace(/\./g, "\\.");
  return [
    `    # What reaches the app from outside (publicPaths); everything else is answered 404 here.`,
    `    # Regexes only, tried in order (plain keys would match case-insensitively).`,
    `    map $uri $synaxic_refused {`,
    `        default 1;`,
    `        # A path parameter (";"), a "%" left after decoding, or a backslash: the servlet container`,
    `        # would cut, decode or reject these itself and could reach what this list does not name.`,
    `        "~[;%\\x5c]" 1;`,
    ...exact.map((p) => `        "~^${escape(p)}$" 0;`),
    `        # Nothing else that names the actuator, in any case.`,
    `        "~*actuator" 1;`,
    ...prefixes.map((p) => `        "~^${escape(p)}" 0;`),
    `    }`,
  ];
}

/**
 * The maps that end in $synaxic_to_writer: 1 for a write method, a path in
 * writePaths, or (apiKeyRequests "writer") a request carrying an API key.
 * Chained maps: a map's value may be another variable, evaluated only when
 * that entry is taken (ngx_http_map_module).
 */
function writerMaps(writePaths: readonly string[], apiKeyRequests: ApiKeyRequests): string[] {
  const pathMap = (variable: string) => [
    `    # Paths that write on any method (writePaths) go to the main app.`,
    `    map $uri ${variable} {`,
    `        default $synaxic_method_writes;`,
    ...writePaths.map((w) => `        ~${prefixRegex(w)} 1;`),
    `    }`,
  ];
  if (apiKeyRequests === "replicas") {
    return [
      `    # Requests with an API key spread like any read (apiKeyRequests "replicas"):`,
      `    # the usage of those a replica app serves is not recorded.`,
      ...pathMap("$synaxic_to_writer"),
    ];
  }
  return [
    ...pathMap("$synaxic_path_writes"),
    ``,
    `    # A request with an API key goes to the main app, which records the key's usage`,
    `    # (apiKeyRequests "writer"). The app reads a key from "Authorization: ApiKey <key>",`,
    `    # a bare "Authorization: syn_live_..." or "syn_test_...", or X-API-Key.`,
    `    map $http_authorization $synaxic_authorization_key {`,
    `        default 0;`,
    `        "~^(ApiKey |syn_live_|syn_test_)" 1;`,
    `    }`,
    `    map $http_x_api_key $synaxic_api_key {`,
    `        default 1;`,
    `        "" $synaxic_authorization_key;`,
    `    }`,
    `    map $synaxic_api_key $synaxic_to_writer {`,
    `        default $synaxic_path_writes;`,
    `        1 1;`,
    `    }`,
  ];
}

/**
 * The body of the location that routes requests: paths the allow list does
 * not open are answered 404, those for the writer jump to @synaxic_write,
 * reads stay. (`return` is one of the directives that are safe inside `if`
 * in a location.)
 */
function routedLocation(match: string, o: { readTimeout: string; readTries: number; readRetryTimeout: string }): string {
  return [
    `        location ${match} {`,
    `            if ($synaxic_refused) {`,
    `                return 404;`,
    `            }`,
    `            error_page 418 = @${WRITE_UPSTREAM};`,
    `            if ($synaxic_to_writer) {`,
    `                return 418;`,
    `            }`,
    `            proxy_pass http://${READ_UPSTREAM};`,
    `            proxy_next_upstream error timeout http_502 http_503;`,
    `            proxy_next_upstream_tries ${o.readTries};`,
    `            proxy_next_upstream_timeout ${o.readRetryTimeout};`,
    `            proxy_read_timeout ${o.readTimeout};`,
    `        }`,
  ].join("\n");
}

/**
 * Renders nginx.conf (a complete main configuration, not a conf.d snippet).
 * Throws with a message naming the offending parameter when one is invalid.
 */
export function renderNginxConf(params: NginxParams): string {
  const p = { ...NGINX_DEFAULTS, ...stripUndefined(params) };
  if (!params.mainApp) throw new NginxParamError("mainApp is required");
  if (!Array.isArray(params.replicaApps)) throw new NginxParamError("replicaApps must be a list (possibly empty)");
  checkEndpoints(params.mainApp, params.replicaApps);

  const listenPort = checkPort("listenPort", p.listenPort);
  const tls = params.tls;
  const publicHttpPort = checkPort("publicHttpPort", params.publicHttpPort ?? listenPort);
  let tlsPort = 0;
  let publicTlsPort = 0;
  let hsts = 0;
  if (tls) {
    tlsPort = checkPort("tls.port", tls.port ?? NGINX_DEFAULTS.tlsPort);
    publicTlsPort = checkPort("tls.publicPort", tls.publicPort ?? tlsPort);
    if (tlsPort === listenPort) throw new NginxParamError(`tls.port and listenPort are both ${tlsPort}`);
    if (!tls.certFile || !tls.keyFile) throw new NginxParamError("tls needs both certFile and keyFile");
    checkWord("tls.certFile", tls.certFile);
    checkWord("tls.keyFile", tls.keyFile);
    hsts = checkInt("tls.hstsMaxAgeSeconds", tls.hstsMaxAgeSeconds ?? NGINX_DEFAULTS.hstsMaxAgeSeconds, 0);
  }
  if (params.serverNames !== undefined && !Array.isArray(params.serverNames)) throw new NginxParamError("serverNames must be a list of host names");
  const serverNames = params.serverNames ?? [];
  for (const n of serverNames) {
    if (!isServerName(n)) {
      throw new NginxParamError(`server name ${JSON.stringify(n)} must be a host name (optionally "*." and a domain) or an IPv4 address`);
    }
  }
  // Only the named hosts are served; a default server answers every other Host.
  const checkHost = serverNames.length > 0;
  checkWord("user", p.user);
  checkWord("pidFile", p.pidFile);
  checkWord("errorLog", p.errorLog);
  checkWord("accessLog", p.accessLog);
  if (params.tempDir !== undefined) checkWord("tempDir", params.tempDir);
  if (p.workerProcesses !== "auto") checkInt("workerProcesses", p.workerProcesses, 1);
  checkInt("maxFails", p.maxFails, 0);
  const readMembers = [params.mainApp, ...params.replicaApps];
  const concurrency = checkInt("concurrency", p.concurrency, 1);
  if (concurrency > MAX_CONCURRENCY) throw new NginxParamError(`concurrency must be at most ${MAX_CONCURRENCY}, got ${concurrency}`);
  const keepalive =
    params.upstreamKeepalive !== undefined
      ? { write: checkInt("upstreamKeepalive", params.upstreamKeepalive, 1), read: params.upstreamKeepalive }
      : { write: upstreamKeepaliveFor(concurrency, 1), read: upstreamKeepaliveFor(concurrency, readMembers.length) };
  const needed = workerConnectionsFor(concurrency, readMembers.length);
  let workerConnections: number;
  if (params.workerConnections !== undefined) {
    workerConnections = checkInt("workerConnections", params.workerConnections, 16);
    if (workerConnections < needed) {
      throw new NginxParamError(
        `workerConnections (${workerConnections}) is below the ${needed} connections one worker may need at concurrency ${concurrency} ` +
          `(${concurrency} clients, ${concurrency} for each of the ${readMembers.length} apps that take reads, ${concurrency} for writes); raise workerConnections or lower concurrency`,
      );
    }
  } else {
    workerConnections = Math.max(NGINX_DEFAULTS.workerConnections, needed);
  }
  checkInt("readTries", p.readTries, 0);
  for (const k of [
    "failTimeout", "upstreamKeepaliveTimeout", "proxyConnectTimeout", "proxySendTimeout", "readTimeout", "writeTimeout",
    "readRetryTimeout", "clientBodyTimeout", "clientHeaderTimeout", "sendTimeout", "keepaliveTimeout",
  ] as const) {
    checkTime(k, p[k]);
  }
  checkSize("clientMaxBodySize", p.clientMaxBodySize);
  if (params.rateLimit) {
    checkInt("rateLimit.perSecond", params.rateLimit.perSecond, 1);
    checkInt("rateLimit.burst", params.rateLimit.burst, 0);
  }

  const writePaths = params.writePaths ?? DEFAULT_WRITE_PATHS;
  if (!Array.isArray(writePaths)) throw new NginxParamError("writePaths must be a list of path prefixes");
  for (const w of writePaths) {
    if (typeof w !== "string" || !WRITE_PATH.test(w)) {
      throw new NginxParamError(`write path ${JSON.stringify(w)} must start with "/" and hold only letters, digits and - . _ ~ /`);
    }
  }
  const publicPaths = params.publicPaths ?? DEFAULT_PUBLIC_PATHS;
  if (!Array.isArray(publicPaths)) throw new NginxParamError("publicPaths must be a list of paths");
  for (const w of publicPaths) {
    const problem = publicPathError(w);
    if (problem) throw new NginxParamError(problem);
  }
  const apiKeyRequests = params.apiKeyRequests ?? "writer";
  if (apiKeyRequests !== "writer" && apiKeyRequests !== "replicas") {
    throw new NginxParamError(`apiKeyRequests must be "writer" or "replicas", got ${JSON.stringify(apiKeyRequests)}`);
  }

  const route = { readTimeout: p.readTimeout, readTries: p.readTries, readRetryTimeout: p.readRetryTimeout };

  const listen = (port: number, ssl: boolean, defaultServer: boolean): string[] => {
    const suffix = (ssl ? " ssl http2" : "") + (defaultServer ? " default_server" : "");
    const lines = [`        listen ${port}${suffix};`];
    if (params.listenIpv6) lines.push(`        listen [::]:${port}${suffix};`);
    return lines;
  };

  const appLocations = [
    `        # Only the allow list ($synaxic_refused, publicPaths) reaches an app; the rest is answered here.`,
    routedLocation("/", route),
    ``,
    `        # Writes: the main app only. A write that may have reached the app is`,
    `        # never replayed on another instance (not on error, timeout or 5xx).`,
    `        location @${WRITE_UPSTREAM} {`,
    `            proxy_pass http://${WRITE_UPSTREAM};`,
    ...(params.mainApp.standby !== undefined
      ? [
          `            # The writing app runs on another host, in one of two deploy slots: a connection`,
          `            # refused by the idle one is tried on the other. nginx never passes a POST, PATCH`,
          `            # or LOCK on once it was sent (proxy_next_upstream, non_idempotent).`,
          `            proxy_next_upstream error;`,
          `            proxy_next_upstream_tries 2;`,
        ]
      : [`            proxy_next_upstream off;`]),
    `            proxy_read_timeout ${p.writeTimeout};`,
    `        }`,
  ];
  // Response headers every server adds, on nginx's own answers too ("always"); the app's copies
  // of the same headers are hidden, so there is one of each. The app's own Content-Security-Policy
  // passes through: a browser enforces every policy it gets, so frame-ancestors here only adds.
  const securityHeaders = [
    `        add_header X-Content-Type-Options nosniff always;`,
    `        add_header X-Frame-Options DENY always;`,
    `        add_header Content-Security-Policy "frame-ancestors 'none'" always;`,
    `        add_header Referrer-Policy strict-origin-when-cross-origin always;`,
  ];
  const hideAppHeaders = [
    `        proxy_hide_header X-Content-Type-Options;`,
    `        proxy_hide_header X-Frame-Options;`,
    `        proxy_hide_header Referrer-Policy;`,
    `        proxy_hide_header Strict-Transport-Security;`,
  ];
  // Per client address: the TCP peer ($binary_remote_addr), never a header the client can write.
  const rateLimit = params.rateLimit ? [`        limit_req zone=synaxic_per_client burst=${params.rateLimit.burst} nodelay;`, `        limit_req_status 429;`] : [];
  // In every proxying server (a server-level proxy_set_header would hide http-level ones).
  const proxyHeaders = (publicPort: number): string[] => [
    `        # Upstream keep-alive needs HTTP/1.1 and an empty Connection header.`,
    `        proxy_http_version 1.1;`,
    `        proxy_set_header Connection "";`,
    `        proxy_set_header Host $host;`,
    `        proxy_set_header X-Real-IP $remote_addr;`,
    `        # nginx is the edge: the client address it saw replaces whatever the client claimed.`,
    `        proxy_set_header X-Forwarded-For $remote_addr;`,
    `        proxy_set_header X-Forwarded-Proto $scheme;`,
    `        proxy_set_header X-Forwarded-Host $host;`,
    `        proxy_set_header X-Forwarded-Port ${publicPort};`,
    `        proxy_set_header Forwarded "";`,
    `        proxy_set_header X-Request-Id $synaxic_request_id;`,
  ];
  const balancerHealth = [
    `        location = /nginx-health {`,
    `            access_log off;`,
    `            default_type text/plain;`,
    `            return 200 "ok\\n";`,
    `        }`,
  ];
  const serverNameLine = `        server_name ${checkHost ? serverNames.join(" ") : "_"};`;
  const tlsLines = tls
    ? [
        `        ssl_certificate ${tls.certFile};`,
        `        ssl_certificate_key ${tls.keyFile};`,
        `        ssl_protocols TLSv1.2 TLSv1.3;`,
        `        ssl_ciphers ${TLS_CIPHERS};`,
        `        ssl_prefer_server_ciphers off;`,
        `        ssl_session_cache shared:synaxic_tls:10m;`,
        `        ssl_session_timeout 1d;`,
        `        ssl_session_tickets off;`,
      ]
    : [];

  const servers: string[] = [];
  if (checkHost) {
    // nginx picks the server by the Host header (the SNI name first, over TLS) and, when no
    // server_name matches, "the request will be handled by the default server for this port"
    // (http/server_names, http/request_processing): this one, which proxies nothing.
    servers.push(
      [
        `    # Any Host but ${serverNames.join(", ")} (or none): 421 Misdirected Request, nothing proxied.`,
        `    server {`,
        ...listen(listenPort, false, true),
        ...(tls ? listen(tlsPort, true, true) : []),
        `        server_name "";`,
        ...tlsLines,
        ...securityHeaders,
        ...rateLimit,
        ...balancerHealth,
        `        location / {`,
        `            return 421;`,
        `        }`,
        `    }`,
      ].join("\n"),
    );
  }
  if (tls) {
    const redirectTarget = publicTlsPort === 443 ? "https://$host$request_uri" : `https://$host:${publicTlsPort}$request_uri`;
    servers.push(
      [
        `    server {`,
        ...listen(listenPort, false, false),
        serverNameLine,
        ...balancerHealth,
        `        location / {`,
        `            return 308 ${redirectTarget};`,
        `        }`,
        `    }`,
      ].join("\n"),
      [
        `    server {`,
        ...listen(tlsPort, true, false),
        serverNameLine,
        ...tlsLines,
        ...(hsts > 0 ? [`        add_header Strict-Transport-Security "max-age=${hsts}" always;`] : []),
        ...(params.exposeUpstreamHeader ? [`        add_header X-Upstream $upstream_addr always;`] : []),
        `        add_header X-Request-Id $synaxic_request_id always;`,
        ...securityHeaders,
        ...hideAppHeaders,
        ...rateLimit,
        ...proxyHeaders(publicTlsPort),
        ...balancerHealth,
        ...appLocations,
        `    }`,
      ].join("\n"),
    );
  } else {
    servers.push(
      [
        `    server {`,
        ...listen(listenPort, false, false),
        serverNameLine,
        ...(params.exposeUpstreamHeader ? [`        add_header X-Upstream $upstream_addr always;`] : []),
        `        add_header X-Request-Id $synaxic_request_id always;`,
        ...securityHeaders,
        ...hideAppHeaders,
        ...rateLimit,
        ...proxyHeaders(publicHttpPort),
        ...balancerHealth,
        ...appLocations,
        `    }`,
      ].join("\n"),
    );
  }

  const tempPaths = params.tempDir
    ? ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((k) => `    ${k}_temp_path ${params.tempDir}/${k};`)
    : [];
  const accessLog = p.accessLog === "off" ? "    access_log off;" : `    access_log ${p.accessLog} synaxic;`;

  return [
    `# nginx.conf for the Synaxic load balancer (rendered; edits are overwritten).`,
    `# Writes -> ${WRITE_UPSTREAM}: ${params.mainApp.name}. Reads -> ${READ_UPSTREAM}: ${readMembers.map((m) => m.name).join(", ")}.`,
    `user ${p.user};`,
    `worker_processes ${p.workerProcesses};`,
    // "the actual number of simultaneous connections cannot exceed the current limit on the maximum number
    // of open files" (worker_connections): above the usual 1024, the workers raise their own limit.
    ...(workerConnections > NGINX_DEFAULTS.workerConnections ? [`worker_rlimit_nofile ${2 * workerConnections};`] : []),
    `pid ${p.pidFile};`,
    `error_log ${p.errorLog} ${p.errorLogLevel};`,
    ...(p.foreground ? ["daemon off;"] : []),
    ``,
    `events {`,
    `    worker_connections ${workerConnections};`,
    `}`,
    ``,
    `http {`,
    `    server_tokens off;`,
    `    default_type application/octet-stream;`,
    `    sendfile on;`,
    `    tcp_nopush on;`,
    ``,
    `    log_format synaxic '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent $request_time '`,
    `                       'upstream=$upstream_addr upstream_status=$upstream_status rid=$synaxic_request_id';`,
    accessLog,
    ...tempPaths,
    ``,
    `    keepalive_timeout ${p.keepaliveTimeout};`,
    `    client_max_body_size ${p.clientMaxBodySize};`,
    `    client_body_timeout ${p.clientBodyTimeout};`,
    `    client_header_timeout ${p.clientHeaderTimeout};`,
    `    send_timeout ${p.sendTimeout};`,
    ...(params.rateLimit ? [`    limit_req_zone $binary_remote_addr zone=synaxic_per_client:10m rate=${params.rateLimit.perSecond}r/s;`] : []),
    ``,
    `    # ${READ_METHODS.join(", ")} are reads; every other method is a write.`,
    `    # A regex, because plain map keys match case-insensitively and methods are case-sensitive.`,
    `    map $request_method $synaxic_method_writes {`,
    `        default 1;`,
    `        ~^(${READ_METHODS.join("|")})$ 0;`,
    `    }`,
    ``,
    ...writerMaps(writePaths, apiKeyRequests),
    ``,
    ...publicMap(publicPaths),
    ``,
    `    # Keep the client's request id when it sends one, otherwise make one.`,
    `    map $http_x_request_id $synaxic_request_id {`,
    `        default $http_x_request_id;`,
    `        "" $request_id;`,
    `    }`,
    ``,
    params.upstreamKeepalive !== undefined
      ? `    # Idle connections each worker keeps per group: a fixed ${params.upstreamKeepalive} (upstreamKeepalive).`
      : `    # Idle connections each worker keeps per group: concurrency (${concurrency}) for each app in the group.`,
    upstreamBlock(WRITE_UPSTREAM, [params.mainApp], p.maxFails, p.failTimeout, keepalive.write, p.upstreamKeepaliveTimeout),
    ``,
    upstreamBlock(READ_UPSTREAM, readMembers, p.maxFails, p.failTimeout, keepalive.read, p.upstreamKeepaliveTimeout),
    ``,
    `    proxy_connect_timeout ${p.proxyConnectTimeout};`,
    `    proxy_send_timeout ${p.proxySendTimeout};`,
    ``,
    ...servers.flatMap((s) => [s, ""]),
    `}`,
    ``,
  ].join("\n");
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * A POSIX shell script for `sh -c SCRIPT sh CONTAINER CONF SECONDS`, run on
 * the host: checks CONF in the running nginx container, reloads it, and
 * waits up to SECONDS for the worker processes that ran before the reload to
 * exit. On `nginx -s reload` the master starts workers with the new
 * configuration and tells the old ones to shut down gracefully: they stop
 * accepting connections, finish the requests they have, and exit (nginx
 * docs, "Controlling nginx": changing configuration). The old workers are
 * the processes whose title is "nginx: worker process" before the reload
 * (ngx_setproctitle in src/os/unix/ngx_process_cycle.c). It succeeds when
 * they are still there after SECONDS (a client holding a connection open),
 * saying so.
 */
export const NGINX_RELOAD_SCRIPT = [
  "set -eu",
  'c=$1; conf=$2; wait_s=$3',
  'docker exec "$c" nginx -t -q -c "$conf"',
  `old=$(docker exec "$c" sh -c 'for f in /proc/[0-9]*/cmdline; do t=$(tr -d "\\000" < "$f" 2>/dev/null) || continue; [ "$t" = "nginx: worker process" ] && basename "$(dirname "$f")"; done; true')`,
  'docker exec "$c" nginx -s reload -c "$conf"',
  '[ -n "$old" ] || exit 0',
  'i=0',
  'while [ "$i" -lt $((wait_s * 5)) ]; do',
  // shellcheck: $old is a list of pids, split on purpose.
  '  if ! docker exec "$c" sh -c \'for p in "$@"; do [ -e "/proc/$p" ] && exit 0; done; exit 1\' sh $old; then exit 0; fi',
  "  sleep 0.2; i=$((i + 1))",
  "done",
  'echo "reloaded; workers of the old configuration still running after ${wait_s}s (a connection held open)"',
].join("\n");
