/* global Buffer, URL */
// A STAND-IN for Grafana 13.0.1 in the test rig's grafana/grafana:13.0.1
// image. It is not Grafana: it has no UI, no database, no queries, no
// alerting. It does what the Synaxic program and its tests rely on:
//
// - settings: grafana.ini (--config), then `cfg:` arguments, then GF_<SECTION>_<KEY>
//   environment variables (GF_SERVER_HTTP_ADDR, GF_SERVER_HTTP_PORT,
//   GF_SECURITY_ADMIN_USER, GF_SECURITY_ADMIN_PASSWORD (or __FILE),
//   GF_AUTH_ANONYMOUS_ENABLED, GF_USERS_ALLOW_SIGN_UP, GF_PATHS_*);
// - the admin password from those settings on the first start only (its
//   hash kept in the state file, as Grafana keeps it in its database), and
//   `grafana cli admin reset-admin-password --password-from-stdin` to change it;
// - the data directory must be writable (it keeps a small state file there),
//   or it exits non-zero as Grafana does when it cannot open its database;
// - every *.yaml/*.yml file under the provisioning directory (datasources,
//   dashboards, plugins, alerting, notifiers, access-control) is read and
//   parsed with environment variable expansion; a file that cannot be read
//   or parsed, a datasource without a name or type, or more than one default
//   datasource, stops it with a message on stderr and exit status 1. The
//   dashboards of every file provider (options.path) are loaded.
// - HTTP: GET /api/health ({"database":"ok",...}), /healthz, /login
//   (GET page, POST JSON login), and with basic auth (admin user) or a
//   session cookie: /api/datasources[/uid/:uid|/name/:name], /api/search,
//   /api/dashboards/uid/:uid, /api/user; POST /api/user/signup is refused
//   while sign-up is off. Everything else under /api is 404, other pages
//   redirect to /login unless signed in (or anonymous access is on).
import http from "node:http";
import { createRequire } from "node:module";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";

const VERSION = "13.0.1";
const COMMIT = "synaxic-stand-in";
const require = createRequire(import.meta.url);
const YAML = require("/usr/share/nodejs/yaml");

function log(level, logger, msg, fields = {}) {
  const parts = [`logger=${logger}`, `t=${new Date().toISOString()}`, `level=${level}`, `msg=${JSON.stringify(msg)}`];
  for (const [k, v] of Object.entries(fields)) parts.push(`${k}=${typeof v === "string" && !/\s|"/.test(v) ? v : JSON.stringify(v)}`);
  process.stdout.write(`${parts.join(" ")}\n`);
}

function fatal(msg) {
  process.stderr.write(`Error: \u2717 ${msg}\n`);
  process.exit(1);
}

// ---------------------------------------------------------------- arguments
const argv = process.argv.slice(2);
if (argv.includes("-v") || argv.includes("--version") || argv[0] === "-v" || argv[0] === "--version") {
  process.stdout.write(`grafana version ${VERSION} (synaxic stand-in, not Grafana)\n`);
  process.exit(0);
}
// `grafana cli [--homepath=...] [--config=...] admin reset-admin-password --password-from-stdin`,
// as Grafana 10.4 has it (pkg/cmd/grafana-cli/commands/reset_password_command.go):
// one line from stdin, refused when shorter than 4 characters, written to the
// admin user (id 1) in the database, which must exist (the server has started).
// Like Grafana, the admin password is set from settings on the first start
// only; this is how it changes afterwards.
if (argv[0] === "cli") {
  const words = argv.slice(1).filter((a) => !/^--(homepath|config)(=|$)/.test(a));
  const i = words.indexOf("admin");
  if (i < 0 || words[i + 1] !== "reset-admin-password" || !words.includes("--password-from-stdin")) {
    fatal(`the stand-in's cli only runs "admin reset-admin-password --password-from-stdin" (got ${JSON.stringify(words.join(" "))})`);
  }
  const line = readFileSync(0, "utf8").split("\n")[0];
  if (line.length < 4) fatal("new password is too short");
  const file = join(process.env.GF_PATHS_DATA ?? "data", "synaxic-grafana-stand-in.json");
  const state = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : null;
  if (!state?.adminPasswordSha256) fatal("could not read user (id: 1) from database. Error: user not found");
  writeFileSync(`${file}.tmp`, `${JSON.stringify({ ...state, adminPasswordSha256: createHash("sha256").update(line).digest("hex") })}\n`);
  renameSync(`${file}.tmp`, file);
  process.stdout.write("New Password: \n\nAdmin password changed successfully \u2714\n");
  process.exit(0);
}
if (argv[0] !== "server") fatal(`the stand-in only runs "grafana server" (got ${JSON.stringify(argv.join(" "))})`);
const flags = {};
const cfgArgs = [];
for (const a of argv.slice(1)) {
  const m = /^--?([a-z-]+)=(.*)$/s.exec(a);
  if (m) flags[m[1]] = m[2];
  else if (a.startsWith("cfg:")) cfgArgs.push(a.slice(4));
  else if (a === "-v" || a === "--version") {
    process.stdout.write(`grafana version ${VERSION} (synaxic stand-in, not Grafana)\n`);
    process.exit(0);
  }
}

// ---------------------------------------------------------------- settings
const settings = new Map(); // "section.key" -> value
const set = (section, key, value) => settings.set(`${section.toLowerCase()}.${key.toLowerCase()}`, value);
const get = (section, key, fallback) => settings.get(`${section}.${key}`) ?? fallback;

for (const [k, v] of Object.entries({
  "paths.data": "data",
  "paths.logs": "data/log",
  "paths.plugins": "data/plugins",
  "paths.provisioning": "conf/provisioning",
  "server.http_addr": "",
  "server.http_port": "3000",
  "security.admin_user": "admin",
  "security.admin_password": "admin",
  "auth.anonymous.enabled": "false",
  "users.allow_sign_up": "false",
  "log.mode": "console",
})) settings.set(k, v);

// cfg:default.x.y=... set defaults (before the ini file); cfg:x.y=... override it.
const cfgOverrides = [];
for (const c of cfgArgs) {
  const m = /^(default\.)?([^=]+)\.([^.=]+)=(.*)$/s.exec(c);
  if (!m) continue;
  if (m[1]) set(m[2], m[3], m[4]);
  else cfgOverrides.push([m[2], m[3], m[4]]);
}

function expandEnv(text) {
  return text.replace(/\$__env\{([^}]*)\}|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, a, b, c) => process.env[a ?? b ?? c] ?? "");
}

const configFile = flags.config;
if (configFile) {
  let text;
  try {
    text = readFileSync(configFile, "utf8");
  } catch (e) {
    fatal(`failed to parse "${configFile}": ${e.message}`);
  }
  let section = "";
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith(";") || line.startsWith("#")) continue;
    const s = /^\[([^\]]+)\]$/.exec(line);
    if (s) {
      section = s[1].trim();
      continue;
    }
    const kv = /^([^=]+?)\s*=\s*(.*)$/.exec(line);
    if (kv) set(section, kv[1], expandEnv(kv[2].replace(/^"(.*)"$/, "$1")));
  }
}
for (const [s, k, v] of cfgOverrides) set(s, k, v);
// GF_<SECTION>_<KEY>: the environment wins (as in Grafana).
for (const key of [...settings.keys()]) {
  const dot = key.lastIndexOf(".");
  const section = key.slice(0, dot);
  const name = key.slice(dot + 1);
  const env = `GF_${section.replace(/[.-]/g, "_").toUpperCase()}_${name.replace(/[.-]/g, "_").toUpperCase()}`;
  if (process.env[env] !== undefined) settings.set(key, process.env[env]);
  else if (process.env[`${env}__FILE`] !== undefined) {
    // run.sh normally turns __FILE variables into values; honour them here too.
    try {
      settings.set(key, readFileSync(process.env[`${env}__FILE`], "utf8").replace(/\n$/, ""));
    } catch (e) {
      fatal(`could not read ${env}__FILE: ${e.message}`);
    }
  }
}
const bool = (v) => String(v).toLowerCase() === "true";

// ---------------------------------------------------------------- data directory
const dataDir = get("paths", "data");
const stateFile = join(dataDir, "synaxic-grafana-stand-in.json");
try {
  mkdirSync(dataDir, { recursive: true });
  const previous = existsSync(stateFile) ? JSON.parse(readFileSync(stateFile, "utf8")) : { starts: 0 };
  const tmp = `${stateFile}.tmp`;
  // The admin user is created on the first start, with the password settings give then; later starts keep it.
  const initial = get("security", "admin_password") || "admin";
  const adminPasswordSha256 = previous.adminPasswordSha256 ?? createHash("sha256").update(initial).digest("hex");
  writeFileSync(tmp, `${JSON.stringify({ version: VERSION, starts: (previous.starts ?? 0) + 1, lastStart: new Date().toISOString(), adminPasswordSha256 })}\n`);
  renameSync(tmp, stateFile);
} catch (e) {
  fatal(`Service init failed: failed to open the data directory ${dataDir} (stand-in for the database): ${e.message}`);
}

// ---------------------------------------------------------------- provisioning
const provisioningDir = get("paths", "provisioning");
const datasources = [];
const dashboards = new Map(); // uid -> { dashboard, file, provider }

function yamlFiles(dir) {
  let names;
  try {
    names = readdirSync(dir);
  } catch (e) {
    if (e.code === "ENOENT") return [];
    fatal(`failed to read provisioning directory ${dir}: ${e.message}`);
  }
  return names.filter((n) => /\.ya?ml$/.test(n)).sort().map((n) => join(dir, n));
}

function readYaml(kind, file) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    fatal(`${kind} provisioning error: failed to read ${file}: ${e.message}`);
  }
  let doc;
  try {
    doc = YAML.parse(expandEnv(text));
  } catch (e) {
    fatal(`${kind} provisioning error: failed to parse ${file}: ${e.message}`);
  }
  return doc ?? {};
}

for (const file of yamlFiles(join(provisioningDir, "datasources"))) {
  const doc = readYaml("Datasource", file);
  const list = doc.datasources ?? [];
  if (!Array.isArray(list)) fatal(`Datasource provisioning error: ${file}: datasources is not a list`);
  for (const ds of list) {
    if (!ds || typeof ds !== "object") fatal(`Datasource provisioning error: ${file}: a datasource is not a mapping`);
    if (!ds.name) fatal(`Datasource provisioning error: ${file}: datasource without a name`);
    if (!ds.type) fatal(`Datasource provisioning error: ${file}: datasource ${ds.name} has no type`);
    datasources.push({
      id: datasources.length + 1,
      uid: ds.uid ?? randomBytes(7).toString("hex"),
      orgId: ds.orgId ?? 1,
      name: ds.name,
      type: ds.type,
      access: ds.access ?? "proxy",
      url: ds.url ?? "",
      isDefault: ds.isDefault === true,
      jsonData: ds.jsonData ?? {},
      readOnly: ds.editable !== true,
    });
  }
}
const defaults = datasources.filter((d) => d.isDefault);
if (defaults.length > 1) fatal("Datasource provisioning error: datasource.yaml config is invalid. Only one datasource per organization can be marked as default");
log("info", "provisioning.datasources", "inserting datasources from configuration", { count: datasources.length });

function dashboardsUnder(dir, provider) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    log("error", "provisioning.dashboard", "Cannot read directory", { provider, path: dir, error: e.message });
    return;
  }
  for (const ent of entries) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) dashboardsUnder(p, provider);
    else if (ent.name.endsWith(".json")) {
      try {
        const d = JSON.parse(readFileSync(p, "utf8"));
        const dash = d.dashboard && typeof d.dashboard === "object" ? d.dashboard : d;
        if (!dash.title) throw new Error("dashboard has no title");
        const uid = dash.uid ?? randomBytes(7).toString("hex");
        dashboards.set(uid, { dashboard: { ...dash, uid }, file: p, provider });
      } catch (e) {
        log("error", "provisioning.dashboard", "failed to load dashboard from ", { file: p, error: e.message });
      }
    }
  }
}

for (const file of yamlFiles(join(provisioningDir, "dashboards"))) {
  const doc = readYaml("Dashboard", file);
  const providers = doc.providers ?? [];
  if (!Array.isArray(providers)) fatal(`Dashboard provisioning error: ${file}: providers is not a list`);
  for (const p of providers) {
    if (!p || typeof p !== "object") fatal(`Dashboard provisioning error: ${file}: a provider is not a mapping`);
    const path = p.options?.path;
    if ((p.type ?? "file") === "file" && path) {
      if (!existsSync(path) || !statSync(path).isDirectory()) log("error", "provisioning.dashboard", "Cannot read directory", { provider: p.name ?? "", path });
      else dashboardsUnder(path, p.name ?? "");
    }
  }
}
log("info", "provisioning.dashboard", "finished to provision dashboards", { count: dashboards.size });

for (const kind of ["plugins", "alerting", "notifiers", "access-control"]) {
  for (const file of yamlFiles(join(provisioningDir, kind))) readYaml(kind[0].toUpperCase() + kind.slice(1), file);
}

// ---------------------------------------------------------------- HTTP
const adminUser = get("security", "admin_user");
if (get("security", "admin_password") === "") log("warn", "stand-in", "admin password is empty: using the default (admin)");
// The admin's password as the database has it now (reset-admin-password changes it while the server runs).
function adminPasswordIs(given) {
  const want = JSON.parse(readFileSync(stateFile, "utf8")).adminPasswordSha256;
  return equal(createHash("sha256").update(String(given)).digest("hex"), want);
}
const anonymous = bool(get("auth.anonymous", "enabled"));
const signUp = bool(get("users", "allow_sign_up"));
const sessions = new Set();

function equal(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

function signedIn(req) {
  const auth = req.headers.authorization ?? "";
  if (auth.startsWith("Basic ")) {
    const [u, ...rest] = Buffer.from(auth.slice(6), "base64").toString("utf8").split(":");
    return equal(u, adminUser) && adminPasswordIs(rest.join(":"));
  }
  const m = /(?:^|;\s*)grafana_session=([0-9a-f]+)/.exec(req.headers.cookie ?? "");
  return !!m && sessions.has(m[1]);
}

function send(res, status, body, headers = {}) {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": typeof body === "string" ? "text/html; charset=UTF-8" : "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    ...headers,
  });
  res.end(res.req.method === "HEAD" ? undefined : text);
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
}

const LOGIN_PAGE = `<!DOCTYPE html><html><head><title>Grafana (stand-in)</title></head><body><h1>Grafana ${VERSION} stand-in</h1><p>Not Grafana: a test double of the Synaxic rig.</p></body></html>`;

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? "/", "http://grafana");
  const path = url.pathname.replace(/\/+$/, "") || "/";
  const method = req.method ?? "GET";
  if (path === "/api/health") return send(res, 200, { commit: COMMIT, database: "ok", version: VERSION });
  if (path === "/healthz") return send(res, 200, "Ok", { "content-type": "text/plain; charset=utf-8" });
  if (path === "/login" && method === "POST") {
    let body = {};
    try {
      body = JSON.parse(await readBody(req));
    } catch {
      return send(res, 400, { message: "bad request data" });
    }
    if (equal(body.user ?? "", adminUser) && adminPasswordIs(body.password ?? "")) {
      const id = randomBytes(16).toString("hex");
      sessions.add(id);
      return send(res, 200, { message: "Logged in", redirectUrl: "/" }, { "set-cookie": `grafana_session=${id}; Path=/; HttpOnly; SameSite=Strict` });
    }
    return send(res, 401, { message: "Invalid username or password" });
  }
  if (path === "/login") return send(res, 200, LOGIN_PAGE);
  if (path === "/api/user/signup" && method === "POST") {
    return signUp ? send(res, 200, { message: "stand-in: sign-up accepted and ignored" }) : send(res, 401, { message: "User signup is disabled" });
  }
  const authed = signedIn(req);
  if (path.startsWith("/api/")) {
    if (!authed && !anonymous) return send(res, 401, { message: "Unauthorized" });
    if (path === "/api/datasources") return send(res, 200, datasources);
    let m = /^\/api\/datasources\/uid\/([^/]+)$/.exec(path);
    if (m) {
      const d = datasources.find((x) => x.uid === decodeURIComponent(m[1]));
      return d ? send(res, 200, d) : send(res, 404, { message: "Data source not found" });
    }
    m = /^\/api\/datasources\/name\/([^/]+)$/.exec(path);
    if (m) {
      const d = datasources.find((x) => x.name === decodeURIComponent(m[1]));
      return d ? send(res, 200, d) : send(res, 404, { message: "Data source not found" });
    }
    m = /^\/api\/dashboards\/uid\/([^/]+)$/.exec(path);
    if (m) {
      const d = dashboards.get(decodeURIComponent(m[1]));
      return d
        ? send(res, 200, { dashboard: d.dashboard, meta: { provisioned: true, provisionedExternalId: d.file, canSave: false, canEdit: false, slug: String(d.dashboard.title).toLowerCase().replace(/[^a-z0-9]+/g, "-") } })
        : send(res, 404, { message: "Dashboard not found" });
    }
    if (path === "/api/search") {
      const q = (url.searchParams.get("query") ?? "").toLowerCase();
      return send(
        res,
        200,
        [...dashboards.values()]
          .filter((d) => String(d.dashboard.title).toLowerCase().includes(q))
          .map((d, i) => ({ id: i + 1, uid: d.dashboard.uid, title: d.dashboard.title, type: "dash-db", tags: d.dashboard.tags ?? [], isStarred: false })),
      );
    }
    if (path === "/api/user") return send(res, 200, { id: 1, login: adminUser, isGrafanaAdmin: true, orgId: 1 });
    return send(res, 404, { message: "Not found" });
  }
  if (!authed && !anonymous) return send(res, 302, "", { location: "/login" });
  return send(res, 200, LOGIN_PAGE);
});

const host = get("server", "http_addr");
const port = Number(get("server", "http_port"));
if (!Number.isInteger(port) || port < 0 || port > 65535) fatal(`invalid http_port ${get("server", "http_port")}`);
server.on("error", (e) => fatal(`Failed to start server: ${e.message}`));
server.listen(port, host || undefined, () => {
  const a = server.address();
  log("info", "http.server", "HTTP Server Listen", { address: `${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`, protocol: "http", subUrl: "", socket: "" });
});
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    log("info", "server", "Shutdown started", { reason: `System signal: ${sig}` });
    server.close();
    process.exit(0);
  });
}
