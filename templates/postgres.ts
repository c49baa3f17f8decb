/**
 * PostgreSQL templates for the Synaxic deployment: pure functions from typed
 * parameters to file text, SQL and shell scripts. No Pulumi here; the
 * components write what these render into the containers.
 */
export { pgTune, pgTuneSettings, formatKb, type PgTune, type PgTuneInput } from "../lib/pgtune";
export {
  PostgresTemplateError,
  pgConfString,
  conninfoValue,
  renderConninfo,
  quoteIdent,
  quoteLiteral,
  validateSlotName,
} from "./postgres-quote";
export {
  renderPostgresqlConf,
  replicaPrimaryConninfo,
  type PostgresConfParams,
  type PrimaryConfParams,
  type ReplicaConfParams,
  type PostgresTlsFiles,
  type PrimaryConninfoParams,
} from "./postgres-conf";
export { renderPgHba, renderPgpass, type PgHbaParams, type PgpassEntry } from "./postgres-hba";
export {
  psqlScriptArgv,
  scramSaltFor,
  scramSha256Verifier,
  renderRolesSql,
  replicaSlotName,
  renderSlotCreateSql,
  renderSlotDropSql,
  renderPromoteSql,
  PG_REWIND_FUNCTIONS,
  type RolesSqlParams,
  type RoleCredentials,
} from "./postgres-sql";
export {
  renderReplicaEntrypoint,
  renderPrimaryEntrypoint,
  type ReplicaEntrypointParams,
  type PrimaryEntrypointParams,
  type ReplicaMode,
} from "./postgres-entrypoint";
export { renderPostgresExporterQueries, postgresExporterQueries } from "./postgres-exporter";
