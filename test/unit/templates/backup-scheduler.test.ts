import { describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BACKUP_OPERATIONS, DRILL_FAILURE_REASONS, drillServerArgv, renderBackupSchedulerScript, renderFleetHostsFile, type BackupDrillParams, type BackupSchedulerParams } from "../../../templates/backup-scheduler";
import { restoreArgv, restoreCommand } from "../../../templates/pgbackrest";
import { backupAlertRules, renderBackupAlertRules } from "../../../templates/backup-alerts";

const P: BackupSchedulerParams = {
  argv: {
    full: ["pgbackrest", "--stanza=synaxic", "--type=full", "backup"],
    diff: ["pgbackrest", "--stanza=synaxic", "--type=diff", "backup"],
    expire: ["pgbackrest", "--stanza=synaxic", "expire"],
    verify: ["pgbackrest", "--stanza=synaxic", "verify"],
    info: ["pgbackrest", "--stanza=synaxic", "--output=json", "info"],
  },
  acts: "whenPrimary",
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

  it("the standby named for backups takes them as a standby (its own configuration) and, once promoted, as the primary; it puts the fleet's names first in its hosts file", () => {
    const s = renderBackupSchedulerScript({
      ...P,
      acts: "always",
      standbyArgv: { full: ["pgbackrest", "--config-path=/etc/pgbackrest/standby", "--stanza=synaxic", "--type=full", "backup"], diff: ["pgbackrest", "--config-path=/etc/pgbackrest/standby", "--stanza=synaxic", "--type=diff", "backup"] },
      fleetHostsFile: "/etc/pgbackrest/fleet-hosts",
    });
    expect(s).toMatchSnapshot();
    execFileSync("bash", ["-n"], { input: s });
    expect(s).toContain("full:standby) run backup-full gosu postgres pgbackrest --config-path=/etc/pgbackrest/standby --stanza=synaxic --type=full backup ;;");
    expect(s).toContain("full:primary) run backup-full gosu postgres pgbackrest --stanza=synaxic --type=full backup ;;");
    expect(s).toContain("FLEET_HOSTS=/etc/pgbackrest/fleet-hosts");
    // acting(): always acts while up, in either role.
    const acting = (acts: string, role: string) => {
      try {
        execFileSync("bash", ["-c", `ACTS=${acts}\n${s.slice(s.indexOf("acting() {"), s.indexOf("}", s.indexOf("acting() {")) + 1)}\nacting ${role}`]);
        return true;
      } catch {
        return false;
      }
    };
    expect([acting("always", "primary"), acting("always", "standby"), acting("always", "down")]).toEqual([true, true, false]);
    expect([acting("whenPrimary", "primary"), acting("whenPrimary", "standby")]).toEqual([true, false]);
    expect([acting("never", "primary"), acting("never", "standby")]).toEqual([false, false]);
  });

  it("puts the fleet's names first in the container's hosts file, and replaces them (not adds) when the fleet changes, keeping Docker's lines", () => {
    const dir = mkdtempSync(join(tmpdir(), "sched-hosts-"));
    const hosts = join(dir, "hosts");
    const fleet = join(dir, "fleet-hosts");
    writeFileSync(hosts, "127.0.0.1 localhost\n203.0.113.9 objects.example.com\n");
    const s = renderBackupSchedulerScript({ ...P, fleetHostsFile: fleet });
    const fn = s.slice(s.indexOf("refresh_hosts() {"), s.indexOf("\n}\n", s.indexOf("refresh_hosts() {")) + 3).replaceAll("/etc/hosts", hosts).replaceAll("/tmp/hosts.synaxic", join(dir, "tmp"));
    const refresh = () => execFileSync("bash", ["-c", `FLEET_HOSTS=${fleet}\n${fn}\nrefresh_hosts`]);
    writeFileSync(fleet, renderFleetHostsFile([{ name: "main", address: "10.10.0.2" }, { name: "replica-1", address: "10.10.0.3" }]));
    refresh();
    refresh();
    expect(readFileSync(hosts, "utf8")).toBe("# synaxic fleet\n10.10.0.2 main\n10.10.0.3 replica-1\n# end synaxic fleet\n127.0.0.1 localhost\n203.0.113.9 objects.example.com\n");
    writeFileSync(fleet, renderFleetHostsFile([{ name: "main", address: "10.10.0.2" }]));
    refresh();
    expect(readFileSync(hosts, "utf8")).toBe("# synaxic fleet\n10.10.0.2 main\n# end synaxic fleet\n127.0.0.1 localhost\n203.0.113.9 objects.example.com\n");
  });

  it("refuses standby commands without acts always, and acts always without them", () => {
    expect(() => renderBackupSchedulerScript({ ...P, acts: "always" })).toThrow(/standbyArgv goes with acts "always"/);
    expect(() => renderBackupSchedulerScript({ ...P, standbyArgv: { full: ["x"], diff: ["y"] } })).toThrow(/standbyArgv goes with acts "always"/);
    expect(() => renderFleetHostsFile([{ name: "main", address: "main" }])).toThrow(/address "main" of main is not an IPv4 address/);
    expect(() => renderFleetHostsFile([{ name: "main\n10.0.0.1 evil", address: "10.10.0.2" }])).toThrow(/host name .* is not a DNS name/);
  });

  it("refuses a schedule out of range, a relative directory, an empty command", () => {
    expect(() => renderBackupSchedulerScript({ ...P, schedule: { ...P.schedule, hourUtc: 24 } })).toThrow(/schedule.hourUtc must be an integer from 0 to 23/);
    expect(() => renderBackupSchedulerScript({ ...P, schedule: { ...P.schedule, fullWeekday: 7 } })).toThrow(/fullWeekday/);
    expect(() => renderBackupSchedulerScript({ ...P, textfileDir: "textfile" })).toThrow(/textfileDir/);
    expect(() => renderBackupSchedulerScript({ ...P, argv: { ...P.argv, verify: [] } })).toThrow(/argv.verify is empty/);
  });
});

const SCRATCH = "/var/lib/synaxic-backup/drill";
const DRILL: BackupDrillParams = {
  schedule: { weekday: 6, hourUtc: 5 },
  timeoutSeconds: 7200,
  scratchDir: SCRATCH,
  database: "synaxic",
  restoreArgv: restoreArgv({ stanza: "synaxic" }, { dataDir: `${SCRATCH}/data`, target: { type: "immediate" }, targetAction: "promote", archiveMode: "off", tablespaceMapAll: `${SCRATCH}/tablespaces` }),
  restoreCommand: restoreCommand({ stanza: "synaxic" }, { dataDir: `${SCRATCH}/data` }),
};

describe("the restore drill in the backup scheduler", () => {
  it("renders", () => {
    const s = renderBackupSchedulerScript({ ...P, drill: DRILL });
    expect(s).toMatchSnapshot();
    execFileSync("bash", ["-n"], { input: s });
  });

  it("restores the newest backup into the scratch directory with archiving off, immediate recovery, no delta, tablespaces inside it", () => {
    const s = renderBackupSchedulerScript({ ...P, drill: DRILL });
    expect(s).toContain(
      `gosu postgres pgbackrest --config-path=/etc/pgbackrest --stanza=synaxic --pg1-path=${SCRATCH}/data --type=immediate --target-action=promote --archive-mode=off --tablespace-map-all=${SCRATCH}/tablespaces restore`,
    );
    expect(s).not.toMatch(/--delta|--force/);
  });

  it("starts the throwaway server with no TCP listener, a private socket, no archiving, no replication, small memory; its WAL comes from the repository without the shared async queue", () => {
    const argv = drillServerArgv(SCRATCH, DRILL.restoreCommand);
    const settings = Object.fromEntries(argv.filter((_, i) => argv[i - 1] === "-c").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
    expect(argv.slice(0, 3)).toEqual(["postgres", "-D", `${SCRATCH}/data`]);
    expect(settings).toMatchObject({
      config_file: `${SCRATCH}/postgresql.conf`,
      hba_file: `${SCRATCH}/pg_hba.conf`,
      listen_addresses: "",
      unix_socket_directories: `${SCRATCH}/socket`,
      unix_socket_permissions: "0700",
      archive_mode: "off",
      archive_command: "",
      primary_conninfo: "",
      primary_slot_name: "",
      max_wal_senders: "0",
      max_replication_slots: "0",
      hot_standby: "off",
      recovery_target_action: "promote",
      shared_buffers: "16MB",
    });
    expect(settings.restore_command).toBe(`pgbackrest --config-path=/etc/pgbackrest --stanza=synaxic --pg1-path=${SCRATCH}/data --no-archive-async --log-level-console=warn archive-get %f %p`);
  });

  it("runs on its weekday from its hour, once that day, only where backups are taken and only with a backup; on demand with the drill argument", () => {
    const s = renderBackupSchedulerScript({ ...P, drill: DRILL });
    const loop = s.slice(s.indexOf("while true; do"));
    expect(loop).toMatch(/if acting "\$role"; then[\s\S]*\[ "\$\(date -u \+%w\)" = 6 \] && \[ "\$\(date -u \+%H\)" -ge 5 \] && \[ "\$\(recorded drill day\)" != "\$\(date -u \+%Y%m%d\)" \] && ! no_backup_yet; then[\s\S]*run drill drill_run[\s\S]*\n {2}fi\n {2}write_metrics/);
    expect(s).toContain('if [ "${1:-}" = drill ]; then');
    // Drills off: no scheduled drill and no drill metrics (so no alert about drills), a drill on demand still possible.
    const off = renderBackupSchedulerScript({ ...P, drill: { ...DRILL, schedule: null } });
    expect(off).not.toContain("run drill drill_run\n    fi");
    expect(off).not.toContain("synaxic_backup_drill_");
    expect(off).toContain('if [ "${1:-}" = drill ]; then');
    // Turned on again later, the drill alert counts from then.
    expect(off).toContain('rm -f "$STATE_DIR/drill.armed" "$STATE_DIR/drill.succeeded"');
    expect(renderBackupSchedulerScript({ ...P, drill: DRILL })).not.toContain("rm -f \"$STATE_DIR/drill.armed\"");
    expect(renderBackupSchedulerScript(P)).not.toContain("drill_run");
  });

  it("reports the drill: result, duration, the restored backup, the reason of a failure", () => {
    const s = renderBackupSchedulerScript({ ...P, drill: DRILL });
    for (const m of ["synaxic_backup_drill_backup_timestamp_seconds{label=", "synaxic_backup_drill_failure_info{reason=", "synaxic_backup_drill_armed_timestamp_seconds", "synaxic_backup_drill_database_bytes"]) expect(s).toContain(m);
    expect(s).toContain("for op in backup-full backup-diff expire verify drill; do");
    for (const r of DRILL_FAILURE_REASONS) expect(s).toMatch(new RegExp(`drill_fail ${r} `));
  });

  it("bounds each step by what is left of the drill's time (exit code 124 past it), passes a step's exit code on, and keeps the heartbeat going meanwhile", () => {
    const s = renderBackupSchedulerScript({ ...P, drill: DRILL });
    const fns = s.slice(s.indexOf("# Seconds left of the drill's bound."), s.indexOf("drill_fail() {"));
    const dir = mkdtempSync(join(tmpdir(), "sched-drill-"));
    const beats = join(dir, "beats");
    const bash = (body: string) => {
      try {
        execFileSync("bash", ["-c", `set -u\nwrite_metrics() { echo beat >> ${beats}; }\nDRILL_CHILD=\nDRILL_BEAT=0\n${fns}\n${body}`]);
        return 0;
      } catch (e) {
        return (e as { status: number }).status;
      }
    };
    expect(bash(`DRILL_DEADLINE=$(( $(date +%s) + 100 )); drill_bounded sh -c 'sleep 2; exit 3'`)).toBe(3);
    expect(readFileSync(beats, "utf8")).toBe("beat\n");
    expect(bash(`DRILL_DEADLINE=$(( $(date +%s) + 1 )); drill_bounded sleep 10`)).toBe(124);
    expect(bash(`DRILL_DEADLINE=$(( $(date +%s) - 1 )); drill_bounded true`)).toBe(124);
  });

  it("refuses a drill that could touch anything but its scratch directory", () => {
    expect(() => renderBackupSchedulerScript({ ...P, drill: { ...DRILL, scratchDir: "/" } })).toThrow(/scratchDir/);
    expect(() => renderBackupSchedulerScript({ ...P, drill: { ...DRILL, scratchDir: "/drill" } })).toThrow(/at least two levels deep/);
    expect(() => renderBackupSchedulerScript({ ...P, drill: { ...DRILL, restoreArgv: DRILL.restoreArgv.filter((a) => a !== "--archive-mode=off") } })).toThrow(/--archive-mode=off/);
    expect(() => renderBackupSchedulerScript({ ...P, drill: { ...DRILL, restoreArgv: ["pgbackrest", "--pg1-path=/var/lib/postgresql/data", "--archive-mode=off", "restore"] } })).toThrow(/must restore into/);
    expect(() => renderBackupSchedulerScript({ ...P, drill: { ...DRILL, restoreArgv: [...DRILL.restoreArgv.slice(0, -1), "--delta", "restore"] } })).toThrow(/--delta/);
    expect(() => renderBackupSchedulerScript({ ...P, drill: { ...DRILL, restoreCommand: restoreCommand({ stanza: "synaxic" }) } })).toThrow(/restoreCommand must fetch WAL/);
    expect(() => renderBackupSchedulerScript({ ...P, drill: { ...DRILL, schedule: { weekday: 7, hourUtc: 5 } } })).toThrow(/drill.schedule.weekday/);
    expect(() => renderBackupSchedulerScript({ ...P, drill: { ...DRILL, database: "a'b" } })).toThrow(/drill.database/);
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

  it("a failed drill has its own rule, with its reason; the generic failure rule leaves it out; a drill too old counts from when drills became due", () => {
    const rules = Object.fromEntries(backupAlertRules().map((r) => [r.alert, r]));
    expect(rules.SynaxicBackupFailed!.expr).toBe('synaxic_backup_last_result_success{operation!="drill"} == 0');
    expect(rules.SynaxicBackupDrillFailed!.expr).toBe("synaxic_backup_drill_failure_info == 1");
    expect(rules.SynaxicBackupDrillFailed!.annotations.summary).toContain("{{ $labels.reason }}");
    for (const r of DRILL_FAILURE_REASONS) expect(rules.SynaxicBackupDrillFailed!.annotations.description).toContain(`${r} (`);
    expect(rules.SynaxicBackupDrillTooOld!.expr).toBe(
      'time() - (max(synaxic_backup_last_success_timestamp_seconds{operation="drill"}) or max(synaxic_backup_drill_armed_timestamp_seconds)) > 691200',
    );
  });

  it("refuses a non-positive threshold", () => {
    expect(() => backupAlertRules({ backupMaxAgeHours: 0, archiveQueueBytes: 1, verifyMaxAgeDays: 1, drillMaxAgeDays: 1, redisSnapshotMaxAgeHours: 1 })).toThrow(/backupMaxAgeHours must be a positive number/);
  });
});
