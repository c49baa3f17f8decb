/** The fleet status command's pieces: queries and parsers, gathering, judging, printing, and the command itself. */
export * from "./types";
export * from "./errors";
export { PG_STATUS_SQL, parsePgStatus } from "./postgres";
export { parseInfo, parseRedisReplication, parseReplicaEntry, redisCliScript, type RedisCliScriptParams } from "./redis";
export { evaluate, fencedRecord, formatBytes, primaryName } from "./evaluate";
export { gather, gatherHost, type HostRunner } from "./gather";
export { buildReport, formatReport, formatReportJson, table, verdictOf } from "./format";
export { buildPlan, controlExpectation, controlStackOf, pulumiStackOutputs, type ReadStackOutputs, type StatusPlan } from "./outputs";
export {
  containerRunner,
  knownHostsLine,
  postgresExecArgv,
  redisExecArgv,
  sshArgv,
  SshExec,
  tail,
  type ContainerRunnerOptions,
  type ExecResult,
  type HostExec,
  type SshOptions,
  type SshTarget,
} from "./runner";
export { EXIT, USAGE, defaultDeps, parseSize, parseStatusArgs, readControlExpectation, runStatus, sshConnect, type Connection, type StatusDeps, type StatusOptions } from "./cli";
