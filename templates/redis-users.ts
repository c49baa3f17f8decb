/**
 * Redis users changed on the running server, so that a new password never
 * restarts Redis and never drops a connection that is already authenticated.
 * Pure functions.
 *
 * users.acl is a file on the host (mounted read-only at REDIS_ACL_DIR); Redis
 * reads it when it starts. On a running server the fleet never uses ACL LOAD:
 * in Redis 7.0 it replaces every user and disconnects every client
 * authenticated as one of the old users (src/acl.c of redis/redis 7.0.15,
 * ACLLoadFromFile ends in ACLFreeUsersSet(old_users), whose callback is
 * ACLFreeUserAndKillClients). ACL SETUSER instead stages the rules on a copy
 * of the user, applies all of them or none, and copies the result over the
 * user in place (ACLStringSetUser): connections authenticated as that user
 * stay authenticated; only pub/sub clients whose channels are no longer
 * allowed are disconnected (ACLKillPubsubClientsIfNeeded), and every user
 * here keeps the channels it had. Passwords are checked at AUTH only.
 *
 * Two steps:
 * - "add" (before any client is given a new password): every password hash
 *   in the file is added to its user, whose other passwords and rules stay
 *   (`ACL SETUSER <user> #<hash>`); a user the server does not have yet is
 *   created with its whole line. A user then accepts the old and the new
 *   password (Redis keeps a list of passwords per user).
 * - "sync" (once the old clients are gone: after the old app slot was
 *   retired): every user is set to exactly its line (`reset` first, so the
 *   old password is dropped, in the same atomic command), and users the file
 *   no longer lists are deleted.
 */
import { REDIS_TLS_PORT } from "./redis";

/** Where the host's ACL directory is mounted in the Redis container. */
export const REDIS_ACL_DIR = "/etc/synaxic/acl";
export const REDIS_ACL_FILE = `${REDIS_ACL_DIR}/users.acl`;

export type RedisUsersMode = "add" | "sync";

export interface RedisUsersTarget {
  port?: number;
  caFile: string;
  /** The ACL user the script authenticates as (it needs ACL SETUSER, GETUSER, USERS, DELUSER). */
  adminUser: string;
}

function checkTarget(t: RedisUsersTarget): { port: number; caFile: string; adminUser: string } {
  const port = t.port ?? REDIS_TLS_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`renderRedisUsersScript: port ${port} is not a TCP port`);
  if (!/^\/[A-Za-z0-9._/-]+$/.test(t.caFile)) throw new Error(`renderRedisUsersScript: caFile ${JSON.stringify(t.caFile)} is not an absolute path of plain characters`);
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(t.adminUser)) throw new Error(`renderRedisUsersScript: adminUser ${JSON.stringify(t.adminUser)} is not a Redis user name`);
  return { port, caFile: t.caFile, adminUser: t.adminUser };
}

/**
 * A POSIX sh script run inside the Redis container (`docker exec -i ... sh -c
 * SCRIPT`). Standard input: the admin user's password on the first line, then
 * users.acl. The password becomes REDISCLI_AUTH; the commands, which carry
 * password hashes, go to redis-cli on its standard input, never on a command
 * line. Prints only the user names it changed; fails on any refused command.
 */
export function renderRedisUsersScript(mode: RedisUsersMode, target: RedisUsersTarget): string {
  if (mode !== "add" && mode !== "sync") throw new Error(`renderRedisUsersScript: mode must be add or sync, got ${JSON.stringify(mode)}`);
  const t = checkTarget(target);
  const common = [
    "set -euf",
    "IFS= read -r REDISCLI_AUTH; export REDISCLI_AUTH",
    "acl=$(cat)",
    `cli() { redis-cli --tls --cacert ${t.caFile} -h 127.0.0.1 -p ${t.port} --user ${t.adminUser} --no-auth-warning "$@"; }`,
    'pong=$(cli PING 2>&1) || true',
    `[ "$pong" = PONG ] || { echo "cannot reach Redis as ${t.adminUser}: $pong" >&2; exit 1; }`,
    // Only "user NAME RULES..." lines; the default user never changes here.
    'lines=$(printf \'%s\\n\' "$acl" | grep \'^user \' | grep -v \'^user default \' || true)',
    '[ -n "$lines" ] || { echo "users.acl lists no users" >&2; exit 1; }',
  ];
  const build =
    mode === "add"
      ? [
          'cmds=$(printf \'%s\\n\' "$lines" | while read -r kw user rules; do',
          '  if [ -n "$(cli ACL GETUSER "$user" </dev/null)" ]; then',
          '    h=""; for w in $rules; do case "$w" in "#"*) h="$h $w" ;; esac; done',
          '    if [ -n "$h" ]; then echo "ACL SETUSER $user$h"; fi',
          "  else",
          '    echo "ACL SETUSER $user $rules"',
          "  fi",
          "done)",
        ]
      : [
          'cmds=$(printf \'%s\\n\' "$lines" | while read -r kw user rules; do echo "ACL SETUSER $user $rules"; done)',
          "for u in $(cli ACL USERS </dev/null); do",
          '  [ "$u" = default ] && continue',
          '  printf \'%s\\n\' "$lines" | grep -q "^user $u " && continue',
          '  cmds="$cmds',
          'ACL DELUSER $u"',
          "done",
        ];
  return [
    ...common,
    ...build,
    '[ -n "$cmds" ] || exit 0',
    'out=$(printf \'%s\\n\' "$cmds" | cli 2>&1) || { echo "redis-cli failed" >&2; exit 1; }',
    // Every reply must be OK (SETUSER) or a count (DELUSER); an error names the modifier, never a password.
    'bad=$(printf \'%s\\n\' "$out" | grep -vx -e OK -e \'[0-9][0-9]*\' || true)',
    '[ -z "$bad" ] || { echo "Redis refused a user change: $bad" >&2; exit 1; }',
    `printf '%s\\n' "$cmds" | while read -r a b user rest; do echo "ACL $b $user"; done`,
    "",
  ].join("\n");
}
