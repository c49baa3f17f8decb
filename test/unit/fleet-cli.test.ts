/**
 * The fleet command's front end (runFleet) with the stacks' outputs and SSH
 * replaced by recorders: which stacks it reads, which host it reaches, the
 * argv it runs there (built by lib/shell.ts's quoting when ssh sends it),
 * what goes on standard input, and that the Redis password is on no argv.
 * Real ssh, sshd and docker: test/integration/fleet.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { FLEET_USAGE, runFleet, type FleetDeps, type FleetSsh } from "../../lib/fleetcli/cli";
import { StackOutputError } from "../../lib/status/errors";
import { USAGE } from "../../lib/status/cli";
import type { SshMode, SshOptions, SshTarget } from "../../lib/status/runner";

const PASSWORD = "redis-admin-password-0123456789abcdef";
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq3T1l0nWn3oLxW4wq0l3m7c7fZ2sQvJ8u0kq8m9yZk";
const MAIN = "acme/synaxic/main";

function outputs(): Record<string, Record<string, unknown>> {
  return {
    [MAIN]: {
      publicAddress: "203.0.113.1",
      hostKey: KEY,
      sshUser: "root",
      postgresMode: "primary",
      fleet: {
        version: 1,
        mainPrivateIp: "10.0.0.1",
        databaseName: "synaxic",
        ports: { postgres: 5433, redis: 6380 },
        replicas: [
          { name: "replica-1", privateIp: "10.0.0.2", slotName: "synaxic_replica_1" },
          { name: "replica-2", privateIp: "10.0.0.3", slotName: "synaxic_replica_2" },
        ],
        redisUsers: { admin: "synaxic_admin" },
      },
      replicaCredentials: { redisAdmin: PASSWORD },
    },
    "acme/synaxic/replica-1": { replicaName: "replica-1", publicAddress: "203.0.113.2", hostKey: KEY, sshUser: "deploy", sshPort: 2222, postgresMode: "replica", redisRole: "replica" },
    "acme/synaxic/replica-2": { replicaName: "replica-2", publicAddress: "203.0.113.3", hostKey: KEY, sshUser: "root", postgresMode: "replica", redisRole: "replica" },
  };
}

interface Call {
  kind: "exec" | "attach" | "pipeThrough" | "close";
  host?: string;
  argv?: readonly string[];
  stdin?: string;
  mode?: SshMode & { stdin?: string };
}

interface Recorder {
  read: string[];
  targets: SshTarget[][];
  opts: SshOptions[];
  calls: Call[];
  stdout: string;
  stderr: string;
}

function fleet(opts: { workspaceError?: Error; outs?: Record<string, Record<string, unknown>>; tty?: boolean; env?: Record<string, string>; execResult?: (argv: readonly string[]) => { code: number; stdout: string; stderr: string }; input?: string } = {}) {
  const outs = opts.outs ?? outputs();
  const rec: Recorder = { read: [], targets: [], opts: [], calls: [], stdout: "", stderr: "" };
  const stdin = Object.assign(new PassThrough(), { isTTY: opts.tty });
  stdin.end(opts.input ?? "");
  const deps: FleetDeps = {
    readStackOutputs: async (stack) => {
      rec.read.push(stack);
      if (!outs[stack]) throw new StackOutputError(`cannot read stack ${stack}: pulumi stack output failed: error: no stack named '${stack}' found`);
      return outs[stack]!;
    },
    ssh: (targets, o) => {
      rec.targets.push(targets);
      rec.opts.push(o);
      const ssh: FleetSsh = {
        exec: async (host, argv, input) => {
          rec.calls.push({ kind: "exec", host, argv, stdin: input });
          return opts.execResult?.(argv) ?? { code: 0, stdout: argv[0] === "sh" ? "/dev/shm/synaxic-fleet.Ab3dEf9h/auth\n" : `${argv.at(-1)}\n`, stderr: "" };
        },
        attach: async (host, argv, mode) => {
          rec.calls.push({ kind: "attach", host, argv, mode });
          return 0;
        },
        pipeThrough: async (host, argv, first, input) => {
          let rest = "";
          for await (const chunk of input) rest += String(chunk);
          rec.calls.push({ kind: "pipeThrough", host, argv, stdin: first + rest });
          return 0;
        },
        close: () => void rec.calls.push({ kind: "close" }),
      };
      return ssh;
    },
    workspace: async () => {
      throw opts.workspaceError ?? new Error("no workspace in these tests");
    },
    stdin,
    stdout: (t) => (rec.stdout += t),
    stderr: (t) => (rec.stderr += t),
    env: { SSH_AUTH_SOCK: "/tmp/agent.sock", ...opts.env },
    projectDir: join(__dirname, "..", ".."),
  };
  return { rec, run: (argv: string[]) => runFleet(argv, deps) };
}

const allArgv = (rec: Recorder) => rec.calls.flatMap((c) => [...(c.argv ?? [])]).join(" ");

describe("fleet: commands and usage", () => {
  it("--help prints the usage (exit 0); no command prints it and exits 1; an unknown command exits 1 naming the commands", async () => {
    const a = fleet();
    expect(await a.run(["--help"])).toBe(0);
    expect(a.rec.stdout).toBe(FLEET_USAGE);
    const b = fleet();
    expect(await b.run([])).toBe(1);
    const c = fleet();
    expect(await c.run(["deploy"])).toBe(1);
    expect(c.rec.stderr).toBe('fleet deploy: unknown command "deploy" (commands: status, logs, psql, redis-cli, restart, up, preview)\nRun with --help for usage.\n');
    expect(c.rec.read).toEqual([]);
  });

  it("status is the status command (its own usage and options)", async () => {
    const a = fleet();
    expect(await a.run(["status", "--help"])).toBe(0);
    expect(a.rec.stdout).toBe(USAGE);
  });

  it("an unknown option, a missing main stack, no SSH identity: exit 1 before anything is reached", async () => {
    const a = fleet();
    expect(await a.run(["logs", "main", "app", "--main", MAIN, "--db", "x"])).toBe(1);
    expect(a.rec.stderr).toContain("unknown option --db for logs");
    const b = fleet();
    expect(await b.run(["psql"])).toBe(1);
    expect(b.rec.stderr).toContain("--main <stack> is required");
    const c = fleet({ env: { SSH_AUTH_SOCK: "" } });
    expect(await c.run(["psql", "--main", MAIN])).toBe(1);
    expect(c.rec.stderr).toContain("no SSH identity");
    for (const x of [a, b, c]) expect(x.rec.targets).toEqual([]);
  });
});

describe("fleet restart", () => {
  it("refuses a service that is not the fleet's before reading any stack", async () => {
    const f = fleet();
    expect(await f.run(["restart", "main", "sshd", "--main", MAIN])).toBe(1);
    expect(f.rec.stderr).toContain('"sshd" is not a service of the fleet (one of: postgres, redis, app, nginx,');
    expect(f.rec.read).toEqual([]);
    expect(f.rec.targets).toEqual([]);
    const g = fleet();
    expect(await g.run(["restart", "main", "host", "--main", MAIN])).toBe(1);
    expect(g.rec.read).toEqual([]);
  });

  it("restarts synaxic-<host>-<service> on that host only, reached through its own stack's outputs", async () => {
    // The app's container is looked up on the host (its name carries its deploy slot); docker restart prints the name.
    const f = fleet({ execResult: () => ({ code: 0, stdout: "synaxic-replica-1-app-b\n", stderr: "" }) });
    expect(await f.run(["restart", "replica-1", "app", "--main", MAIN])).toBe(0);
    expect(f.rec.read).toEqual([MAIN, "acme/synaxic/replica-1"]);
    expect(f.rec.targets).toEqual([[{ name: "replica-1", address: "203.0.113.2", port: 2222, user: "deploy", hostKey: KEY }]]);
    expect(f.rec.calls[0]).toMatchObject({ kind: "exec", host: "replica-1", stdin: "" });
    expect(f.rec.calls[0]!.argv!.slice(-3)).toEqual(["sh", "synaxic-replica-1-app", "restart"]);
    expect(f.rec.calls.at(-1)).toEqual({ kind: "close" });
    expect(f.rec.stdout).toBe("restarted synaxic-replica-1-app-b on replica-1\n");
    const n = fleet();
    expect(await n.run(["restart", "main", "nginx", "--main", MAIN])).toBe(0);
    expect(n.rec.calls[0]).toEqual({ kind: "exec", host: "main", argv: ["docker", "restart", "synaxic-main-nginx"], stdin: "" });
  });

  it("a docker failure exits 1 with docker's message; an unknown host names the fleet's hosts", async () => {
    const f = fleet({ execResult: () => ({ code: 1, stdout: "", stderr: "Error response from daemon: No such container: synaxic-main-grafana\n" }) });
    expect(await f.run(["restart", "main", "grafana", "--main", MAIN])).toBe(1);
    expect(f.rec.stderr).toBe("fleet restart: docker restart on main failed (exit 1): Error response from daemon: No such container: synaxic-main-grafana\n");
    const g = fleet();
    expect(await g.run(["restart", "replica-9", "app", "--main", MAIN])).toBe(1);
    expect(g.rec.stderr).toContain(`no host replica-9 in the fleet of ${MAIN} (hosts: main, replica-1, replica-2)`);
    expect(g.rec.targets).toEqual([]);
  });
});

describe("fleet logs", () => {
  it("docker logs --tail N of the service's container, streamed without a time limit only with -f", async () => {
    const f = fleet();
    expect(await f.run(["logs", "main", "nginx", "--main", MAIN, "--tail", "20"])).toBe(0);
    expect(f.rec.read).toEqual([MAIN]);
    expect(f.rec.calls[0]).toEqual({ kind: "attach", host: "main", argv: ["docker", "logs", "--tail", "20", "synaxic-main-nginx"], mode: { stdin: "ignore", untimed: false } });
    const g = fleet();
    expect(await g.run(["logs", "replica-2", "postgres", "--main", MAIN, "-f", "-n", "all", "--timestamps"])).toBe(0);
    expect(g.rec.calls[0]).toEqual({ kind: "attach", host: "replica-2", argv: ["docker", "logs", "--tail", "all", "--follow", "--timestamps", "synaxic-replica-2-postgres"], mode: { stdin: "ignore", untimed: true } });
    const h = fleet();
    expect(await h.run(["logs", "main", "--main", MAIN])).toBe(1);
    expect(h.rec.stderr).toContain("logs takes <host> <service>");
    expect(await fleet().run(["logs", "main", "app", "--main", MAIN, "--tail", "-3"])).toBe(1);
  });
});

describe("fleet psql", () => {
  it("defaults to the primary (main) and the app's database; a terminal gets ssh -t and docker exec -it", async () => {
    const f = fleet({ tty: true });
    expect(await f.run(["psql", "--main", MAIN])).toBe(0);
    expect(f.rec.read).toEqual([MAIN, "acme/synaxic/replica-1", "acme/synaxic/replica-2"]);
    expect(f.rec.stderr).toBe("fleet psql: the primary is main\n");
    expect(f.rec.calls[0]).toEqual({
      kind: "attach",
      host: "main",
      argv: ["docker", "exec", "-i", "-t", "-u", "postgres", "synaxic-main-postgres", "psql", "--port=5433", "--dbname=synaxic"],
      mode: { stdin: "inherit", tty: true, untimed: true },
    });
  });

  it("without a terminal: no -t anywhere; --db and psql's own arguments after --", async () => {
    const f = fleet({ tty: false });
    expect(await f.run(["psql", "replica-1", "--main", MAIN, "--db", "postgres", "--", "-At", "-c", "SELECT 1"])).toBe(0);
    expect(f.rec.read).toEqual([MAIN, "acme/synaxic/replica-1"]);
    expect(f.rec.calls[0]).toEqual({
      kind: "attach",
      host: "replica-1",
      argv: ["docker", "exec", "-i", "-u", "postgres", "synaxic-replica-1-postgres", "psql", "--port=5433", "--dbname=postgres", "-At", "-c", "SELECT 1"],
      mode: { stdin: "inherit", tty: false, untimed: true },
    });
  });

  it("after a failover the primary is the replica whose stack says promoted", async () => {
    const outs = outputs();
    outs[MAIN]!.postgresMode = "rejoin";
    outs["acme/synaxic/replica-2"]!.postgresMode = "promoted";
    const f = fleet({ outs });
    expect(await f.run(["psql", "--main", MAIN])).toBe(0);
    expect(f.rec.stderr).toBe("fleet psql: the primary is replica-2\n");
    expect(f.rec.calls[0]!.host).toBe("replica-2");
    expect(f.rec.targets[0]!.map((t) => t.name)).toEqual(["replica-2"]);
  });

  it("under a control stack psql and redis-cli go to the primary it records, whatever the host stacks' modes say", async () => {
    const outs = outputs();
    const under = { controlStack: "acme/synaxic/control", controlGeneration: 2 };
    Object.assign(outs[MAIN]!, under, { postgresMode: "rejoin" });
    Object.assign(outs["acme/synaxic/replica-1"]!, under);
    // replica-2's stack still says promoted: deployed before the change that made replica-1 primary.
    Object.assign(outs["acme/synaxic/replica-2"]!, { controlStack: "acme/synaxic/control", controlGeneration: 1, postgresMode: "promoted", redisRole: "master" });
    outs["acme/synaxic/control"] = { control: { version: 1, primary: "replica-1", generation: 2, previousPrimary: "replica-2", fenced: { main: { method: "stop", generation: 1 }, "replica-2": { method: "stop", generation: 2 } } } };
    const f = fleet({ outs });
    expect(await f.run(["psql", "--main", MAIN])).toBe(0);
    expect(f.rec.read).toContain("acme/synaxic/control");
    expect(f.rec.stderr).toBe("fleet psql: the primary is replica-1\n");
    expect(f.rec.calls[0]!.host).toBe("replica-1");
    const r = fleet({ outs, tty: false, input: "PING\n" });
    expect(await r.run(["redis-cli", "--main", MAIN])).toBe(0);
    expect(r.rec.stderr).toBe("fleet redis-cli: the Redis master is replica-1\n");
  });
});

describe("fleet redis-cli", () => {
  it("without a terminal: the password is the first line of ssh's stdin, the rest is the user's input; no argv holds it", async () => {
    const f = fleet({ tty: false, input: "PING\nDBSIZE\n" });
    expect(await f.run(["redis-cli", "--main", MAIN])).toBe(0);
    expect(f.rec.stderr).toBe("fleet redis-cli: the Redis master is main\n");
    const call = f.rec.calls[0]!;
    expect(call.kind).toBe("pipeThrough");
    expect(call.stdin).toBe(`${PASSWORD}\nPING\nDBSIZE\n`);
    expect(call.argv!.slice(0, 2)).toEqual(["sh", "-c"]);
    expect(call.argv!.slice(4)).toEqual([
      "docker", "exec", "-i", "-e", "REDISCLI_AUTH", "synaxic-main-redis",
      "redis-cli", "--tls", "--cacert", "/etc/synaxic/tls/ca.crt", "-h", "127.0.0.1", "-p", "6380", "--user", "synaxic_admin", "--no-auth-warning",
    ]);
    expect(allArgv(f.rec)).not.toContain(PASSWORD);
  });

  it("with a terminal: the password goes first into a 0600 file on the host (stdin of its own ssh), then ssh -t runs docker exec -it reading it, then the file is removed", async () => {
    const f = fleet({ tty: true });
    expect(await f.run(["redis-cli", "replica-1", "--main", MAIN, "--", "INFO", "replication"])).toBe(0);
    const [stash, session, cleanup] = f.rec.calls;
    expect(stash).toMatchObject({ kind: "exec", host: "replica-1", stdin: PASSWORD });
    expect(stash!.argv![0]).toBe("sh");
    expect(stash!.argv![2]).toContain("umask 077");
    expect(session).toMatchObject({ kind: "attach", host: "replica-1", mode: { stdin: "inherit", tty: true, untimed: true } });
    expect(session!.argv!.slice(3, 5)).toEqual(["sh", "/dev/shm/synaxic-fleet.Ab3dEf9h/auth"]);
    expect(session!.argv!.slice(5, 11)).toEqual(["docker", "exec", "-i", "-t", "-e", "REDISCLI_AUTH"]);
    expect(session!.argv!.slice(-2)).toEqual(["INFO", "replication"]);
    expect(cleanup).toEqual({ kind: "exec", host: "replica-1", argv: ["rm", "-rf", "--", "/dev/shm/synaxic-fleet.Ab3dEf9h"], stdin: "" });
    expect(allArgv(f.rec)).not.toContain(PASSWORD);
  });

  it("refuses a path it did not ask for from the host, and goes no further", async () => {
    const f = fleet({ tty: true, execResult: () => ({ code: 0, stdout: "/etc/passwd\n", stderr: "" }) });
    expect(await f.run(["redis-cli", "--main", MAIN])).toBe(1);
    expect(f.rec.stderr).toContain("unexpected answer from the host when storing the session's password");
    expect(f.rec.calls.filter((c) => c.kind === "attach")).toEqual([]);
  });

  it("the Redis master is a replica whose stack says redisRole master; a missing admin password is named, never shown", async () => {
    const outs = outputs();
    outs["acme/synaxic/replica-1"]!.redisRole = "master";
    const f = fleet({ outs });
    expect(await f.run(["redis-cli", "--main", MAIN])).toBe(0);
    expect(f.rec.calls[0]!.host).toBe("replica-1");
    const bad = outputs();
    (bad[MAIN]!.replicaCredentials as Record<string, unknown>).redisAdmin = "short";
    const g = fleet({ outs: bad });
    expect(await g.run(["redis-cli", "main", "--main", MAIN])).toBe(1);
    expect(g.rec.stderr).toContain('output "replicaCredentials.redisAdmin" is missing or malformed');
    expect(g.rec.stderr).not.toContain("short");
  });
});

describe("npm run fleet (scripts/fleet.cjs): the compiled command", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "flc-launcher-"));
    writeFileSync(join(dir, "pulumi"), '#!/bin/sh\necho "error: no stack named $6 found" >&2\nexit 255\n');
    chmodSync(join(dir, "pulumi"), 0o755);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const launch = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string; ms: number }>((resolve) => {
      const t0 = performance.now();
      execFile(process.execPath, [join(__dirname, "..", "..", "scripts", "fleet.cjs"), ...args], { env: { PATH: `${dir}:${process.env.PATH}` }, timeout: 120_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout, stderr, ms: performance.now() - t0 }),
      );
    });

  it("builds when its sources changed, then starts from the build: --help, and status reading stacks through the Pulumi CLI", async () => {
    await launch(["--help"]); // builds if needed
    const help = await launch(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toBe(FLEET_USAGE);
    expect(help.stderr).toBe("");
    // Started from the build, not type-checked: well under the seconds ts-node takes (a generous bound for a loaded machine).
    expect(help.ms).toBeLessThan(1500);
    const status = await launch(["status", "--main", MAIN, "--identity", "/dev/null"]);
    expect(status.code).toBe(1);
    expect(status.stderr).toBe(`status: cannot read stack ${MAIN}: pulumi stack output failed: error: no stack named ${MAIN} found\n`);
  }, 150_000);
});

describe("fleet up / preview before any stack runs", () => {
  it("no Pulumi CLI, a main stack that cannot be selected, no Pulumi project: exit 1 with one line that says so", async () => {
    const a = fleet({ workspaceError: new Error("code: -2\n stdout: \n stderr: Command failed with ENOENT: pulumi version\nspawn pulumi ENOENT\n err?: Error: Command failed with ENOENT: pulumi version") });
    expect(await a.run(["preview", "--main", MAIN])).toBe(1);
    expect(a.rec.stderr).toBe("fleet preview: the Pulumi CLI (pulumi) is not on PATH\n");
    const b = fleet({ workspaceError: new Error("code: 255\n stdout: \n stderr: error: no stack named 'acme/synaxic/main' found\n") });
    expect(await b.run(["up", "--main", MAIN])).toBe(1);
    expect(b.rec.stderr).toBe(`fleet up: cannot read the main stack ${MAIN}: error: no stack named 'acme/synaxic/main' found\n`);
    const c = fleet();
    expect(await c.run(["up", "--main", MAIN, "--cwd", "/"])).toBe(1);
    expect(c.rec.stderr).toContain("no Pulumi.yaml in /: give the project directory with --cwd");
    const d = fleet();
    expect(await d.run(["up", "extra", "--main", MAIN])).toBe(1);
    expect(d.rec.stderr).toContain("up takes no arguments");
  });
});
