/**
 * The exporters' web configuration (exporter-toolkit), redis_exporter's TLS
 * settings and Prometheus' matching scrape configuration, as rendered.
 * test/integration/exporter-auth.test.ts runs them with the real binaries.
 */
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { EXPORTER_SCRAPE_USER, EXPORTER_WEB_FILES, redisExporterTlsEnv, renderExporterWebConfig } from "../../../templates/exporter-web";
import { JOBS, renderPrometheusConfig } from "../../../templates/prometheus";

/** A well-formed bcrypt hash (of "secret", cost 10), as golang.org/x/crypto/bcrypt writes them. */
const HASH = "$2a$10$abcdefghijklmnopqrstuuqflPDzB6gcMhKa1rZqKiun2YGL5sa2u";
const FILES = { certFile: EXPORTER_WEB_FILES.cert, keyFile: EXPORTER_WEB_FILES.key, clientCaFile: EXPORTER_WEB_FILES.clientCa };
const AUTH = {
  caFile: "/etc/prometheus/scrape/ca.crt",
  certFile: "/etc/prometheus/scrape/client.crt",
  keyFile: "/etc/prometheus/scrape/client.key",
  basicAuth: { username: EXPORTER_SCRAPE_USER, passwordFile: "/etc/prometheus/scrape/exporter-password" },
};

describe("renderExporterWebConfig", () => {
  it("TLS 1.2 or newer, a client certificate from the fleet CA required, basic auth against the hash", () => {
    const text = renderExporterWebConfig({ ...FILES, basicAuth: { username: EXPORTER_SCRAPE_USER, bcryptHash: HASH } });
    expect(text).toMatchSnapshot();
    expect(parse(text)).toEqual({
      tls_server_config: {
        cert_file: "/etc/synaxic/web/exporter.crt",
        key_file: "/etc/synaxic/web/exporter.key",
        client_auth_type: "RequireAndVerifyClientCert",
        client_ca_file: "/etc/synaxic/web/client-ca.crt",
        min_version: "TLS12",
      },
      basic_auth_users: { prometheus: HASH },
    });
  });

  it("without basicAuth: TLS alone", () => {
    expect(parse(renderExporterWebConfig(FILES))).not.toHaveProperty("basic_auth_users");
  });

  it("refuses anything but a bcrypt hash, without repeating the value", () => {
    for (const bad of ["secret", "$2a$10$short", `${HASH}x`, HASH.replace("$10$", "$03$"), "$1$abc$defghijklmnopqrstuvwxyz0123456789012345678901234567"]) {
      const call = () => renderExporterWebConfig({ ...FILES, basicAuth: { username: "prometheus", bcryptHash: bad } });
      expect(call).toThrow(/basicAuth\.bcryptHash is not a bcrypt hash/);
      try {
        call();
      } catch (e) {
        expect(String(e)).not.toContain(bad);
      }
    }
    expect(() => renderExporterWebConfig({ ...FILES, basicAuth: { username: "a user", bcryptHash: HASH } })).toThrow(/basicAuth\.username "a user"/);
    expect(() => renderExporterWebConfig({ ...FILES, keyFile: "relative/key" })).toThrow(/keyFile must be a plain absolute path/);
    expect(() => renderExporterWebConfig({ ...FILES, certFile: "/etc/../cert" })).toThrow(/certFile must be a plain absolute path/);
  });
});

describe("redisExporterTlsEnv", () => {
  it("sets the server certificate, key and client CA (which makes client certificates required) and TLS 1.2", () => {
    expect(redisExporterTlsEnv(FILES)).toEqual([
      "REDIS_EXPORTER_TLS_SERVER_CERT_FILE=/etc/synaxic/web/exporter.crt",
      "REDIS_EXPORTER_TLS_SERVER_KEY_FILE=/etc/synaxic/web/exporter.key",
      "REDIS_EXPORTER_TLS_SERVER_CA_CERT_FILE=/etc/synaxic/web/client-ca.crt",
      "REDIS_EXPORTER_TLS_SERVER_MIN_VERSION=TLS1.2",
    ]);
    expect(() => redisExporterTlsEnv({ ...FILES, clientCaFile: "" })).toThrow(/clientCaFile/);
  });
});

describe("renderPrometheusConfig with exporterAuth", () => {
  const config = renderPrometheusConfig({ exporterAuth: AUTH });
  const jobs = Object.fromEntries((parse(config).scrape_configs as Record<string, unknown>[]).map((j) => [j.job_name, j]));

  it("scrapes node_exporter and postgres_exporter over https with the client certificate and basic auth from a file", () => {
    for (const job of [JOBS.node, JOBS.postgres]) {
      expect(jobs[job]).toMatchObject({
        scheme: "https",
        tls_config: { ca_file: AUTH.caFile, cert_file: AUTH.certFile, key_file: AUTH.keyFile, min_version: "TLS12" },
        basic_auth: { username: "prometheus", password_file: AUTH.basicAuth.passwordFile },
      });
      expect(jobs[job]).not.toHaveProperty("basic_auth.password");
    }
  });

  it("scrapes redis_exporter over https with the client certificate alone (1.45 has no basic auth)", () => {
    expect(jobs[JOBS.redis]).toMatchObject({ scheme: "https", tls_config: { ca_file: AUTH.caFile, cert_file: AUTH.certFile, key_file: AUTH.keyFile } });
    expect(jobs[JOBS.redis]).not.toHaveProperty("basic_auth");
  });

  it("leaves the app and Prometheus itself on plain HTTP, and no server_name (targets are IP SANs)", () => {
    expect(jobs[JOBS.app]).not.toHaveProperty("scheme");
    expect(jobs[JOBS.prometheus]).not.toHaveProperty("scheme");
    expect(config).not.toContain("server_name");
    expect(config).toMatchSnapshot();
  });

  it("without exporterAuth every job is plain HTTP, as before", () => {
    expect(renderPrometheusConfig()).not.toMatch(/scheme|tls_config|basic_auth/);
  });

  it("refuses relative paths and odd user names", () => {
    expect(() => renderPrometheusConfig({ exporterAuth: { ...AUTH, keyFile: "client.key" } })).toThrow(/exporterAuth\.keyFile must be a plain absolute path/);
    expect(() => renderPrometheusConfig({ exporterAuth: { ...AUTH, basicAuth: { ...AUTH.basicAuth, passwordFile: "" } } })).toThrow(/exporterAuth\.basicAuth\.passwordFile/);
    expect(() => renderPrometheusConfig({ exporterAuth: { ...AUTH, basicAuth: { ...AUTH.basicAuth, username: "a:b" } } })).toThrow(/exporterAuth\.basicAuth\.username/);
  });
});
