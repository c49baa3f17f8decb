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
  it.each([
    ["the top level is DOWN while its components are UP (503, as Spring Boot maps DOWN)", '{"status":"DOWN","components":{"db":{"status":"UP"},"redis":{"status":"UP","details":{"version":"7.4"}}}}', 503],
    ["the top level is DOWN, listed after UP components, even if the HTTP status said 200", '{"components":{"db":{"status":"UP","details":{"database":"PostgreSQL"}},"ping":{"status":"UP"}},"status":"DOWN"}', 200],
    ["the top level is OUT_OF_SERVICE", '{"status":"OUT_OF_SERVICE","components":{"livenessState":{"status":"UP"}}}', 503],
    ["the body is not JSON", "UP", 200],
  ])("fails when %s", async (_what, body, status) => {
    const { server, port } = await serve(body, status);
    try {
      expect(await check(appHealthcheck(port))).not.toBe(0);
    } finally {
      server.close();
    }
  });
  it.each([
    ["after its components, with nested details", '{"components":{"db":{"status":"DOWN","details":{"error":"x"}},"diskSpace":{"status":"UP"}},"status":"UP"}'],
    ["with groups and spaces around the colon", '{"status" : "UP","groups":["liveness","readiness"]}'],
  ])("passes when the top level is UP %s", async (_what, body) => {
    const { server, port } = await serve(body);
    try {
      expect(await check(appHealthcheck(port))).toBe(0);
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
  // Variables of the old setup's .env that only fed spring.redisson.*, which the app's Redisson starter never reads.
  const IGNORED_BY_THE_APP = ["SYNAXIC_REDIS_READ_MODE", "SPRING_DATA_REDIS_SLAVE_HOSTS", "SPRING_DATA_REDIS_REPLICA_HOST"];
  it("write mode: the primary, the Redis master", () => {
    const env = appEnvironment({ ...base, mode: "write" });
    expect(env).toContain("SPRING_DATA_REDIS_MASTER_HOST=10.10.0.2");
    expect(env).toContain("SERVER_ADDRESS=10.10.0.2");
    expect(env).toContain("SPRING_DATASOURCE_URL=jdbc:postgresql://127.0.0.1:5432/synaxic?sslmode=verify-full&sslrootcert=/app/pg-tls/ca.crt");
    // Required: a missing secrets directory stops the app instead of binding "${...}" placeholders.
    expect(env).toContain("SPRING_CONFIG_IMPORT=configtree:/run/synaxic/app/");
    expect(env.map((e) => e.split("=")[0])).not.toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`^(${IGNORED_BY_THE_APP.join("|")})$`))]));
    expect(env.some((e) => /PASSWORD|SECRET/.test(e.split("=")[0]!))).toBe(false);
    expect(env).toMatchSnapshot();
  });
  it("read mode: the local replica, read-only; Redis is the master, as for the writing app", () => {
    const env = appEnvironment({ ...base, mode: "read" });
    expect(env).toContain("SPRING_DATA_REDIS_MASTER_HOST=10.10.0.2");
    for (const name of IGNORED_BY_THE_APP) expect(env.some((e) => e.startsWith(`${name}=`))).toBe(false);
    expect(env.find((e) => e.startsWith("SPRING_DATASOURCE_URL="))).toMatch(/readOnly=true/);
    expect(env).toMatchSnapshot();
  });
});
