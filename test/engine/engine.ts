/**
 * The real Pulumi engine for the engine tier, run the way a user of this
 * repository runs it: through the `pulumi` npm package that `npm ci`
 * installs (node_modules/.bin/pulumi), which starts the CLI of its own
 * version from $PULUMI_HOME/versions/<version>/bin, with the Node.js language
 * host beside it (the package's run.js puts that folder first on PATH). The
 * package would download the CLI there on first use; here it is found in a
 * cache outside the repository (SYNAXIC_ENGINE_DIR, default
 * /var/cache/synaxic-engine), whose home/ is the tier's PULUMI_HOME:
 *
 *   home/versions/<version>/bin/pulumi, .../pulumi-language-nodejs
 *   plugins/pulumi-resource-<name>-v<version>   one per provider the program uses
 *
 * The versions are the ones the program's npm packages pin. Plugins are
 * installed as Pulumi expects them (`pulumi plugin install resource NAME
 * VERSION --file`) under that PULUMI_HOME, with automatic plugin
 * acquisition off; each test gets its own file backend and passphrase.
 */
import { execFileSync, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { parse, stringify } from "yaml";

export const REPO = resolve(__dirname, "..", "..");

/** The providers the program uses: npm package name to plugin name. */
const PROVIDER_PACKAGES = ["@pulumi/docker", "@pulumi/command", "@pulumi/random", "@pulumi/tls"] as const;

export interface EnginePaths {
  dir: string;
  /** The npm package's launcher, what `npx pulumi` and npm scripts run. */
  launcher: string;
  /** The CLI binary the launcher starts. */
  pulumi: string;
  languageHost: string;
  plugins: { name: string; version: string; file: string }[];
  pulumiVersion: string;
}

function packageJson(pkg: string): { version: string; pulumi?: { name?: string; version?: string } } {
  return JSON.parse(readFileSync(join(REPO, "node_modules", pkg, "package.json"), "utf8"));
}

/** The engine's paths; throws, naming what is missing, when it is not installed. */
export function requireEngine(): EnginePaths {
  const { paths, missing } = locateEngine();
  if (missing.length > 0) throw new Error(`the engine tier needs ${missing.join(", ")} (see test/engine/README.md)`);
  return paths;
}

/** The rig's image archive (test/engine/images/build.sh: built once, then cached). */
export function rigImages(): string {
  const out = execFileSync("bash", [join(REPO, "test", "engine", "images", "build.sh")], { stdio: ["ignore", "pipe", "inherit"], timeout: 3_000_000 }).toString().trim().split("\n");
  return out[out.length - 1]!;
}

/** What the tier needs, and what of it is missing on this machine. */
export function locateEngine(): { paths: EnginePaths; missing: string[] } {
  const dir = process.env.SYNAXIC_ENGINE_DIR ?? "/var/cache/synaxic-engine";
  // The `pulumi` npm package's version is the CLI version it runs (its README: "The npm package version matches the Pulumi CLI version exactly").
  const pulumiVersion = packageJson("pulumi").version;
  const cliDir = join(dir, "home", "versions", pulumiVersion, "bin");
  const plugins = PROVIDER_PACKAGES.map((pkg) => {
    const pj = packageJson(pkg);
    const name = pj.pulumi?.name ?? pkg.split("/")[1]!;
    const version = pj.pulumi?.version ?? pj.version;
    return { name, version, file: join(dir, "plugins", `pulumi-resource-${name}-v${version}`) };
  });
  const paths: EnginePaths = {
    dir,
    launcher: join(REPO, "node_modules", ".bin", "pulumi"),
    pulumi: join(cliDir, "pulumi"),
    languageHost: join(cliDir, "pulumi-language-nodejs"),
    plugins,
    pulumiVersion,
  };
  const missing = [paths.pulumi, paths.languageHost, ...plugins.map((p) => p.file)].filter((f) => !existsSync(f));
  return { paths, missing };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  input?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  allowFail?: boolean;
  /** Kill the process (SIGKILL, as a crash) once this says so (asked every 200 ms). */
  interruptWhen?: () => Promise<boolean>;
}

export function runProcess(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ["pipe", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    let interrupted = false;
    const kill = () => {
      interrupted = true;
      // Like a crash of the machine running Pulumi: no chance to clean up.
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        /* gone */
      }
    };
    let polling = !!opts.interruptWhen;
    const poll = async () => {
      while (polling && !interrupted) {
        if (await opts.interruptWhen!().catch(() => false)) {
          kill();
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    void poll();
    child.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr!.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        /* gone */
      }
    }, opts.timeoutMs ?? 900_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      polling = false;
      const result = { code: code ?? (signal ? 128 : 1), stdout, stderr };
      if (result.code !== 0 && !opts.allowFail && !interrupted) {
        // The engine prints each resource's error where it happened, long before its summary: keep those lines too.
        const errors = stdout.split("\n").filter((l) => /error/i.test(l)).slice(0, 40).join("\n");
        reject(new Error(`${argv.join(" ")} exited ${result.code}\n--- error lines\n${errors.slice(0, 8000)}\n--- stdout\n${stdout.slice(-6000)}\n--- stderr\n${stderr.slice(-6000)}`));
      } else resolvePromise(result);
    });
    child.stdin!.on("error", () => undefined);
    child.stdin!.end(opts.input ?? "");
  });
}

/** The files of the program a user checks out (everything the engine runs). */
const PROGRAM_ENTRIES = ["Pulumi.yaml", "index.ts", "package.json", "tsconfig.json", "tsconfig.pulumi.json", "components", "lib", "stacks", "templates", "policy"];

/**
 * A Pulumi session as a user has one: a checkout of the program in its own
 * directory, a file backend, a passphrase, and the engine on PATH.
 */
export class Engine {
  readonly env: Record<string, string>;

  constructor(
    readonly paths: EnginePaths,
    readonly backendDir: string,
    readonly passphrase = "engine-tier-passphrase",
  ) {
    mkdirSync(backendDir, { recursive: true });
    this.env = {
      // As under `npm run`: the package's launcher first on PATH.
      PATH: `${dirname(paths.launcher)}:${process.env.PATH}`,
      PULUMI_HOME: join(paths.dir, "home"),
      PULUMI_BACKEND_URL: `file://${backendDir}`,
      PULUMI_CONFIG_PASSPHRASE: passphrase,
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_SKIP_CONFIRMATIONS: "true",
      PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK: "true",
      NO_COLOR: "1",
      // The operator's machine: where the stacks write the Docker client's
      // SSH identities (outside every checkout).
      SYNAXIC_SSH_DIR: join(dirname(backendDir), "operator-ssh"),
      TS_NODE_PROJECT: "tsconfig.json",
    };
  }

  /** Installs the plugins under PULUMI_HOME once (a no-op when they are there). */
  async installPlugins(): Promise<void> {
    const { stdout } = await this.cli(["plugin", "ls", "--json"], { cwd: REPO });
    const have = new Set((JSON.parse(stdout || "[]") as { name: string; version: string; kind: string }[]).map((p) => `${p.kind}/${p.name}/${p.version}`));
    for (const p of this.paths.plugins) {
      if (have.has(`resource/${p.name}/${p.version}`)) continue;
      await this.cli(["plugin", "install", "resource", p.name, p.version, "--file", p.file], { cwd: REPO });
    }
  }

  /** How long each CLI command took (command, stack, milliseconds), for the tier's summary. */
  readonly timings: { command: string; stack: string; ms: number }[] = [];

  async cli(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const t0 = performance.now();
    try {
      return await runProcess([this.paths.launcher, ...args], { ...opts, env: { ...this.env, ...opts.env } });
    } finally {
      const stackAt = args.indexOf("--stack");
      this.timings.push({ command: args.filter((a) => !a.startsWith("-"))[0] ?? "", stack: stackAt >= 0 ? (args[stackAt + 1] ?? "") : "", ms: performance.now() - t0 });
    }
  }

  /** Time spent in the CLI, per command (up, preview, ...), longest first. */
  timingSummary(): string {
    const by = new Map<string, { n: number; ms: number }>();
    for (const t of this.timings) {
      const e = by.get(t.command) ?? { n: 0, ms: 0 };
      by.set(t.command, { n: e.n + 1, ms: e.ms + t.ms });
    }
    return [...by.entries()]
      .sort((a, b) => b[1].ms - a[1].ms)
      .map(([c, e]) => `${c.padEnd(10)} ${String(e.n).padStart(4)} runs ${(e.ms / 1000).toFixed(1).padStart(8)} s (${(e.ms / e.n / 1000).toFixed(1)} s each)`)
      .join("\n");
  }

  /** A fresh checkout of the program in `dir`, sharing the repository's node_modules. */
  checkout(dir: string, extra: string[] = []): Checkout {
    mkdirSync(dir, { recursive: true });
    for (const e of [...PROGRAM_ENTRIES, ...extra]) cpSync(join(REPO, e), join(dir, e), { recursive: true });
    symlinkSync(join(REPO, "node_modules"), join(dir, "node_modules"));
    return new Checkout(this, dir);
  }
}

export interface PreviewStep {
  op: string;
  urn: string;
  type: string;
  diffs?: string[];
  detailedDiff?: Record<string, { kind: string; inputDiff?: boolean }>;
}

/** The resource type a URN names (urn:pulumi:stack::project::[parent$]type::name). */
export function urnType(urn: string): string {
  const parts = urn.split("::");
  return (parts[parts.length - 2] ?? "").split("$").pop() ?? "";
}

export class Checkout {
  constructor(
    readonly engine: Engine,
    readonly dir: string,
  ) {}

  pulumi(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.engine.cli(args, { ...opts, cwd: this.dir });
  }

  /** Creates the stack (or selects it) and writes its plain config, then its secrets through the CLI. */
  async initStack(stack: string, config: Record<string, unknown>, secrets: Record<string, string> = {}): Promise<void> {
    await this.pulumi(["stack", "select", "--create", stack]);
    this.writeConfig(stack, config);
    for (const [k, v] of Object.entries(secrets)) await this.pulumi(["config", "set", "--secret", "--stack", stack, k], { input: v });
  }

  /** Merges plain config into the stack's file (keys without a namespace are the project's). */
  writeConfig(stack: string, config: Record<string, unknown>): void {
    const file = join(this.dir, `Pulumi.${stack}.yaml`);
    const doc = (existsSync(file) ? parse(readFileSync(file, "utf8")) : null) ?? {};
    doc.config = doc.config ?? {};
    for (const [k, v] of Object.entries(config)) {
      const key = k.includes(":") ? k : `synaxic:${k}`;
      if (v === undefined) delete doc.config[key];
      else doc.config[key] = v;
    }
    writeFileSync(file, stringify(doc));
  }

  async up(stack: string, opts: RunOptions = {}): Promise<RunResult> {
    return this.pulumi(["up", "--yes", "--skip-preview", "--stack", stack, "--non-interactive"], opts);
  }

  /**
   * The preview's steps that change something: not `same`, and not the
   * `read` of a StackReference, which every preview of a replica does.
   */
  async previewChanges(stack: string, extra: string[] = []): Promise<PreviewStep[]> {
    const r = await this.pulumi(["preview", "--json", "--diff", "--stack", stack, "--non-interactive", ...extra]);
    const doc = JSON.parse(r.stdout) as { steps?: PreviewStep[] };
    return (doc.steps ?? []).map((s) => ({ ...s, type: urnType(s.urn) })).filter((s) => s.op !== "same" && !(s.op === "read" && s.type === "pulumi:pulumi:StackReference"));
  }

  async outputs(stack: string, showSecrets = false): Promise<Record<string, unknown>> {
    const r = await this.pulumi(["stack", "output", "--json", "--stack", stack, ...(showSecrets ? ["--show-secrets"] : [])]);
    return JSON.parse(r.stdout);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  stackFiles(): string[] {
    return readdirSync(this.dir).filter((f) => /^Pulumi\..+\.yaml$/.test(f));
  }
}
