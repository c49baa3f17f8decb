#!/bin/sh
# Behaves as the official redis image's docker-entrypoint.sh (7.0, Debian
# variant) does for what the Synaxic program uses:
# - arguments that start with '-' or a first argument ending in .conf are
#   given to redis-server;
# - redis-server started as root: every file under the working directory
#   (/data) not owned by redis is handed to redis, then this script runs again
#   as redis through gosu;
# - a umask of 0022 becomes 0077 (files Redis writes are private);
# - then the command is exec'd.
set -e

case "$1" in
	-*|*.conf) set -- redis-server "$@" ;;
esac

if [ "$1" = redis-server ] && [ "$(id -u)" -eq 0 ]; then
	find . ! -user redis -exec chown redis {} +
	exec gosu redis "$0" "$@"
fi

if [ "$(umask)" = 0022 ]; then
	umask 0077
fi

exec "$@"
