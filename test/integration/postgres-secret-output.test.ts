/**
 * What a failing SQL step leaves behind, on a real PostgreSQL 15 server.
 * The command provider puts a failing command's output into the update
 * log even with logging off, and PostgreSQL logs a failing statement: a
 * roles script that fails must quote neither its passwords' verifiers nor
 * anything else it carries, on psql's output or in the server's log.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { TestNet } from "../rig/net";
import { makeCa } from "../rig/pki";
import { PgCluster, PgNode, startPrimaryWithRoles } from "../rig/postgres";
import { psqlScriptArgv, renderRolesSql } from "../../templates/postgres-sql";

let net: TestNet;
let main: PgNode;

beforeAll(async () => {
  net = await TestNet.create(["main", "app"]);
  const cluster = new PgCluster({ net, ca: makeCa("pg-test-ca", net.mkdir("ca")), dbHosts: [net.host("main")], appHosts: [net.host("app")], exporterHosts: [] });
  main = cluster.node(net.host("main"));
  await startPrimaryWithRoles(main);
}, 120_000);

afterAll(async () => {
  await net?.destroy();
});

describe("a failing roles step", () => {
  it("psql's output and the server log name the error but quote no statement and no secret", async () => {
    const r = main.cluster.roles;
    const marker = "NeverPrintThisSecret-9f3a";
    // The rendered roles script (as the step runs it), then a statement that fails while carrying a secret.
    const sql = `${renderRolesSql({ appDatabase: r.appDatabase, app: r.app, replication: r.replication, exporter: r.exporter, rewind: r.rewind })}\nALTER ROLE ${r.app.name} PASSWORD '${marker}' NOSUCHOPTION;\n`;
    const logAt = main.logLength();
    const argv = psqlScriptArgv({ host: main.socketDir, port: main.port });
    const out = await main.host.exec([join(main.cluster.bin, "psql"), ...argv.slice(1)], { user: "postgres", input: sql, allowFail: true });
    expect(out.code).not.toBe(0);
    expect(`${out.stdout}${out.stderr}`).toMatch(/ERROR: {2}unrecognized role option "nosuchoption"/);
    expect(`${out.stdout}${out.stderr}`).not.toContain(marker);
    expect(`${out.stdout}${out.stderr}`).not.toContain("SCRAM-SHA-256$");
    const log = main.log(logAt);
    expect(log).toMatch(/ERROR: {2}unrecognized role option/);
    expect(log).not.toContain(marker);
    expect(log).not.toContain("SCRAM-SHA-256$");
    expect(log).not.toContain("STATEMENT:");
  });

  it("without the terse verbosity and the session's log settings, both would have quoted it (the check above can fail)", async () => {
    const marker = "ShownWithoutTheFix-1c2d";
    const logAt = main.logLength();
    const out = await main.psql(`ALTER ROLE ${main.cluster.roles.app.name} PASSWORD '${marker}' NOSUCHOPTION;`, { allowFail: true });
    expect(`${out.stdout}${out.stderr}`).toContain(marker);
    expect(main.log(logAt)).toContain(marker);
  });
});
