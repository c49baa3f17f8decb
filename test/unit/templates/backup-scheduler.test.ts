import { describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { BACKUP_OPERATIONS, renderBackupSchedulerScript, type BackupSchedulerParams } from "../../../templates/backup-scheduler";
import { backupAlertRules, renderBackupAlertRules } from "../../../templates/backup-alerts";

const P: BackupSchedulerParams = {
  argv: {
    full: ["pgbackrest", "--stanza=synaxic", "--type=full", "backup"],
    diff: ["pgbackrest", "--stanza=synaxic", "--type=diff", "backup"],
    expire: ["pgbackrest", "--stanza=synaxic", "expire"],
    verify: ["pgbackrest", "--stanza=synaxic", "verify"],
    info: ["pgbackrest", "--stanza=synaxic", "--output=json", "info"],
  },
  schedule: { fullWeekday: 0, hourUtc: 3, verifyWeekday: 3 },
  inRecoveryArgv: ["psql", "-X", "-At", "-c", "SELECT pg_catalog.pg_is_in_recovery()"],
  textfileDir: "/textfile",
  stateDir: "/var/lib/synaxic-backup",
  spoolDir: "/var/spool/pgbackrest",
  hostName: "main",
};

describe("the backup scheduler script", () => {
  it("renders", () => {
    expect(renderBackupSchedulerScript(P)).toMatchSnapshot();
  });

  it("is valid bash", () => {
    execFileSync("bash", ["-n"], { input: renderBackupSchedulerScript(P) });
  });

  it("runs every pgBackRest command as postgres, and reports every operation", () => {
    const s = renderBackupSchedulerScript(P);
    expect(s).toContain("gosu postgres pgbackrest --stanza=synaxic --type=full backup");
    expect(s).toContain("gosu postgres pgbackrest --stanza=synaxic --type=diff backup");
    expect(s).not.toMatch(/^\s*pgbackrest /m);
    expect(s).toContain(`for op in ${BACKUP_OPERATIONS.join(" ")}; do`);
  });

  it("refuses a schedule out of range, a relative directory, an empty command", () => {
    expect(() => renderBackupSchedulerScript({ ...P, schedule: { ...P.schedule, hourUtc: 24 } })).toThrow(/schedule.hourUtc must be an integer from 0 to 23/);
    expect(() => renderBackupSchedulerScript({ ...P, schedule: { ...P.schedule, fullWeekday: 7 } })).toThrow(/fullWeekday/);
    expect(() => renderBackupSchedulerScript({ ...P, textfileDir: "textfile" })).toThrow(/textfileDir/);
    expect(() => renderBackupSchedulerScript({ ...P, argv: { ...P.argv, verify: [] } })).toThrow(/argv.verify is empty/);
  });
});

describe("the backup alert rules", () => {
  it("render", () => {
    expect(renderBackupAlertRules()).toMatchSnapshot();
  });

  it("every rule has a severity and says what to do", () => {
    for (const r of backupAlertRules()) {
      expect(["warning", "critical"]).toContain(r.labels.severity);
      expect(r.annotations.description.length).toBeGreaterThan(40);
    }
  });

  it("refuses a non-positive threshold", () => {
    expect(() => backupAlertRules({ backupMaxAgeHours: 0, archiveQueueBytes: 1, verifyMaxAgeDays: 1 })).toThrow(/backupMaxAgeHours must be a positive number/);
  });
});
