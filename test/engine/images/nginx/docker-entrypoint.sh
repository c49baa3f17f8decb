#!/bin/sh
# Entrypoint of the stand-in nginx:1.31.10 image. Like the official one: when
# the command is nginx or nginx-debug, the scripts in /docker-entrypoint.d
# run first in version order (*.envsh sourced, executable *.sh run; this image
# ships none), then the command is exec'd.
set -e

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
	for f in $(find /docker-entrypoint.d/ -follow -type f 2>/dev/null | sort -V); do
		case "$f" in
			*.envsh) [ -x "$f" ] && . "$f" ;;
			*.sh) [ -x "$f" ] && "$f" ;;
		esac
	done
fi

exec "$@"
