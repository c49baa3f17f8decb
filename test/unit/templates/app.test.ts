import { describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { appEnvironment, appHealthcheck } from "../../../templates/app";

function serve(body: string, status = 200): Promise<{ server: Server; port: number }> {
  return new Promise((resolve) => {
    const server = createServer((req, res) => {
      res.writeHead(req.url === "/actuator/health" ? status : 404, { "content-type": "application/json" });
      res.end(req.url === "/actuator/health" ? body : "{}");
    });
    server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port }));
  });
}

/** Runs the check the way Docker's CMD-SHELL does: /bin/sh -c. */
function check(cmd: string): Promise<number> {
  return new Promise((resolve) => spawn("sh", ["-c", cmd], { stdio: "ignore" }).on("close", (code) => resolve(code ?? 1)));
}

describe("app health check, run against a real HTTP server", () => {
  it("passes when /actuator/health says UP", async () => {
    const { server, port } = await serve('{"status":"UP","components":{"db":{"status":"UP"}}}');
    try {
      expect(await check(appHealthcheck(port))).toBe(0);
    } finally {
      server.close();
    }
  });
  it("fails when the app reports DOWN", async () => {
    const { server, port } = await serve('{"status":"DOWN"}', 503);
    try {
      expect(await check(appHealthcheck(port))).not.toBe(0);
    } finally {
      server.close();
    }
  });
  it("fails when nothing listens", async () => {
    const { server, port } = await serve("{}");
    await new Promise((r) => server.close(r));
    expect(await check(appHealthcheck(port))).not.toBe(0);
  });
  it("refuses a bad port", () => {
    expect(() => appHealthcheck(0)).toThrow(/not a TCP port/);
  });
});

describe("app environment", () => {
  const base = {
    listenAddress: "10.10.0.2",
    listenPort: 8080,
    dbHost: "127.0.0.1",
    dbPort: 5432,
    dbName: "synaxic",
    dbUser: "synaxic",
    redisMasterHost: "10.10.0.2",
    redisPort: 6380,
    redisUser: "synaxic",
    googleClientId: "client-id",
  };
  it("write mode: the primary, Redis master only", () => {
    const env = appEnvironment({ ...base, mode: "write", redisReplicaHosts: [] });
    expect(env).toContain("SYNAXIC_REDIS_READ_MODE=MASTER");
    expect(env).toContain("SERVER_ADDRESS=10.10.0.2");
    expect(env).toContain("SPRING_DATASOURCE_URL=jdbc:postgresql://127.0.0.1:5432/synaxic?sslmode=verify-full&sslrootcert=/app/pg-tls/ca.crt");
    expect(env).toContain("SPRING_CONFIG_IMPORT=optional:configtree:/run/synaxic/app/");
    expect(env.some((e) => /PASSWORD|SECRET/.test(e.split("=")[0]!))).toBe(false);
    expect(env).toMatchSnapshot();
  });
  it("read mode: the local replica, read-only, Redis reads from the local replica", () => {
    const env = appEnvironment({ ...base, mode: "read", redisReplicaHost: "10.10.0.3", redisReplicaHosts: ["10.10.0.3"] });
    expect(env).toContain("SYNAXIC_REDIS_READ_MODE=SLAVE");
    expect(env).toContain("SPRING_DATA_REDIS_REPLICA_HOST=10.10.0.3");
    expect(env).toContain("SPRING_DATA_REDIS_SLAVE_HOSTS=rediss://10.10.0.3:6380");
    expect(env.find((e) => e.startsWith("SPRING_DATASOURCE_URL="))).toMatch(/readOnly=true/);
    expect(env).toMatchSnapshot();
  });
});
