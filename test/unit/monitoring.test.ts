/**
 * The Monitoring component's Alertmanager, run through the main program under
 * mocks: its container, volume and files, Prometheus' alerting block, and
 * the receivers' secrets kept secret from stack config to the host.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { loadStackConfig, type MainConfig, type StackConfig } from "../../lib/config";
import { memoryBudget } from "../../lib/memory";
import { mainStack } from "../../stacks/main";
import { RECEIVERS } from "../../templates/alertmanager";
import { SECRET_SIG, findLeaks, runMocked, type RunResult } from "./harness";
import { SECRET_KEYS, mainConfig, runMain } from "./fixtures";

type Run = RunResult<Awaited<ReturnType<typeof mainStack>>>;
const P = "synaxic:";
const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";

const ALERT_SECRETS = {
  [`${P}alertSmtpPassword`]: "SmtpPasswordValue0123",
  [`${P}alertSlackWebhookUrl`]: "https://hooks.slack.com/services/T000/B000/SlackTokenValue0123",
  [`${P}alertWebhookUrl`]: "https://hooks.example.com/WebhookTokenValue0123",
  [`${P}alertHeartbeatUrl`]: "https://hc-ping.com/HeartbeatTokenValue0123",
};
const ALERT_PLAIN = {
  [`${P}alertEmailTo`]: JSON.stringify(["ops@example.com"]),
  [`${P}alertEmailFrom`]: "alerts@example.com",
  [`${P}alertSmtpSmarthost`]: "smtp.example.com:587",
  [`${P}alertSmtpUsername`]: "alerts",
  [`${P}alertSlackChannel`]: "#ops",
};

function runWithReceivers(): Promise<Run> {
  const config = mainConfig(1, { ...ALERT_PLAIN, ...ALERT_SECRETS });
  return runMocked({ config, secretKeys: [...SECRET_KEYS, ...Object.keys(ALERT_SECRETS)], stack: "main" }, () => mainStack(loadStackConfig() as MainConfig & StackConfig));
}

let plain: Run;
let full: Run;

beforeAll(async () => {
  plain = await runMain(1);
  full = await runWithReceivers();
}, 120_000);

describe("Alertmanager on the main host (mocks)", () => {
  it("runs the pinned image on loopback, without a cluster port, with its data volume, its memory share and the config dir read-only", () => {
    const c = plain.one(CONTAINER, "monitoring-alertmanager").inputs;
    expect(c.name).toBe("synaxic-main-alertmanager");
    expect(c.command).toEqual(["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager", "--web.listen-address=127.0.0.1:9093", "--cluster.listen-address="]);
    expect(plain.of("docker:index/remoteImage:RemoteImage").map((r) => r.inputs.name)).toContain("prom/alertmanager:v0.33.1");
    expect(c.volumes).toEqual([{ volumeName: "synaxic-main-alertmanager-data", containerPath: "/alertmanager" }]);
    expect(c.mounts).toEqual([expect.objectContaining({ type: "bind", target: "/etc/alertmanager", readOnly: true })]);
    expect(String((c.mounts as { source: string }[])[0]!.source)).toMatch(/\/main\/alertmanager$/);
    expect(c.memory).toBe(memoryBudget("main", 8192).limitsMiB.alertmanager);
    expect(c.restart).toBe("unless-stopped");
  });

  it("Prometheus' configuration sends alerts to it", () => {
    const conf = parse(String(plain.one(COMMAND, "monitoring-config").inputs.stdin)) as { alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] } };
    expect(conf.alerting.alertmanagers[0]!.static_configs[0]!.targets).toEqual(["127.0.0.1:9093"]);
  });

  it("with no receiver configured: the file is plain, has no receiver configurations, and no secret file is written", () => {
    const step = plain.one(COMMAND, "monitoring-alertmanager-config");
    const doc = parse(String(step.inputs.stdin)) as { receivers: Record<string, unknown>[] };
    expect(doc.receivers).toEqual([{ name: RECEIVERS.critical }, { name: RECEIVERS.warning }, { name: RECEIVERS.heartbeat }]);
    expect(String(step.inputs.create)).toContain("main/alertmanager/alertmanager.yml");
    expect(String(step.inputs.create)).toMatch(/ 0600 65534:65534/);
    expect(plain.of(COMMAND).filter((c) => /alertmanager-(smtp-password|slack-url)/.test(c.name))).toEqual([]);
  });

  it("every receiver: the config names the secret files, and the SMTP password and Slack URL go to 0600 files of their own as secrets", () => {
    const cfg = full.one(COMMAND, "monitoring-alertmanager-config");
    const doc = parse(String(cfg.inputs.stdin)) as { receivers: { name: string; email_configs?: Record<string, unknown>[]; slack_configs?: Record<string, unknown>[]; webhook_configs?: Record<string, unknown>[] }[] };
    const critical = doc.receivers.find((r) => r.name === RECEIVERS.critical)!;
    expect(critical.email_configs![0]).toMatchObject({ auth_username: "alerts", auth_password_file: "/etc/alertmanager/secrets/smtp-password", to: "ops@example.com" });
    expect(critical.slack_configs![0]).toMatchObject({ api_url_file: "/etc/alertmanager/secrets/slack-api-url", channel: "#ops" });
    expect(critical.webhook_configs![0]!.url).toBe(ALERT_SECRETS[`${P}alertWebhookUrl`]);
    expect(doc.receivers.find((r) => r.name === RECEIVERS.heartbeat)!.webhook_configs![0]!.url).toBe(ALERT_SECRETS[`${P}alertHeartbeatUrl`]);
    // The file's content holds webhook URLs: a secret.
    expect(findLeaks(cfg.raw.stdin, Object.values(ALERT_SECRETS))).toEqual([]);

    const pw = full.one(COMMAND, "monitoring-alertmanager-smtp-password");
    expect(pw.inputs.stdin).toBe(ALERT_SECRETS[`${P}alertSmtpPassword`]);
    expect(String(pw.inputs.create)).toMatch(/main\/alertmanager\/secrets\/smtp-password 0600 65534:65534/);
    const slack = full.one(COMMAND, "monitoring-alertmanager-slack-url");
    expect(slack.inputs.stdin).toBe(ALERT_SECRETS[`${P}alertSlackWebhookUrl`]);
    expect(String(slack.inputs.create)).toMatch(/secrets\/slack-api-url 0600 65534:65534/);
    for (const step of [pw, slack]) expect(findLeaks(step.raw.stdin, Object.values(ALERT_SECRETS)), step.name).toEqual([]);
    // The container waits for its files.
    const deps = full.one(CONTAINER, "monitoring-alertmanager").opts.dependsOn;
    for (const n of ["monitoring-alertmanager-config", "monitoring-alertmanager-smtp-password", "monitoring-alertmanager-slack-url"]) expect(deps, n).toContain(n);
  });

  it("no receiver secret appears anywhere outside a secret: inputs, command lines, triggers, outputs", () => {
    const secrets = Object.values(ALERT_SECRETS);
    const leaks = full.resources.flatMap((r) => findLeaks(r.raw, secrets).map((p) => `${r.type} ${r.name}: ${p}`));
    expect(leaks).toEqual([]);
    for (const c of full.of(COMMAND)) for (const s of secrets) expect(String(c.inputs.create), c.name).not.toContain(s);
    for (const [k, v] of Object.entries(full.values)) if (!full.secretOutputs.has(k)) expect(findLeaks(v, secrets), `output ${k}`).toEqual([]);
  });

  it("a change of the configuration reloads Alertmanager with SIGHUP from inside its container; the trigger is secret", () => {
    const reload = full.one(COMMAND, "monitoring-alertmanager-reload");
    expect(String(reload.inputs.create)).toContain("docker exec synaxic-main-alertmanager sh -c 'kill -HUP 1'");
    const digestOf = (r: Run) => JSON.stringify(r.one(COMMAND, "monitoring-alertmanager-reload").inputs.triggers);
    expect(digestOf(full)).not.toBe(digestOf(plain));
    expect(JSON.stringify(reload.raw.triggers)).toContain(SECRET_SIG);
  });
});
