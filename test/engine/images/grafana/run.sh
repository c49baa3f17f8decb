#!/bin/bash -e
# /run.sh of the stand-in grafana/grafana:13.0.1 image. Does what the official
# image's /run.sh does before starting Grafana:
# - warns when the config is not readable, the data directory not writable or
#   the home not readable;
# - creates the plugins directory;
# - every GF_*__FILE variable becomes the variable without __FILE, holding the
#   file's content (both set: error), e.g. GF_SECURITY_ADMIN_PASSWORD__FILE;
# - HOME is the Grafana home;
# then starts `grafana server` with the official arguments. GF_INSTALL_PLUGINS
# and GF_AWS_PROFILES are not supported (a message says so).

problem=0
if [ ! -r "$GF_PATHS_CONFIG" ]; then echo "GF_PATHS_CONFIG='$GF_PATHS_CONFIG' is not readable."; problem=1; fi
if [ ! -w "$GF_PATHS_DATA" ]; then echo "GF_PATHS_DATA='$GF_PATHS_DATA' is not writable."; problem=1; fi
if [ ! -r "$GF_PATHS_HOME" ]; then echo "GF_PATHS_HOME='$GF_PATHS_HOME' is not readable."; problem=1; fi
if [ "$problem" -eq 1 ]; then
	echo "You may have issues with file permissions, more information here: http://docs.grafana.org/installation/docker/#migrate-to-v51-or-later"
fi

if [ ! -d "$GF_PATHS_PLUGINS" ]; then
	mkdir "$GF_PATHS_PLUGINS"
fi

if [ -n "${GF_AWS_PROFILES+x}" ] || [ -n "${GF_INSTALL_PLUGINS:-}" ]; then
	echo >&2 "grafana stand-in: GF_AWS_PROFILES and GF_INSTALL_PLUGINS are ignored"
fi

while IFS= read -r name; do
	file_var="${name}__FILE"
	if [ -n "${!name:-}" ]; then
		echo >&2 "ERROR: Both $name and $file_var are set (but are exclusive)"
		exit 1
	fi
	echo "Getting secret $name from ${!file_var}"
	export "$name"="$(< "${!file_var}")"
	unset "$file_var"
done < <(env | sed -n 's/^\(GF_[^=]*\)__FILE=.\+$/\1/p')

export HOME="$GF_PATHS_HOME"

exec grafana server \
	--homepath="$GF_PATHS_HOME" \
	--config="$GF_PATHS_CONFIG" \
	--packaging=docker \
	"$@" \
	cfg:default.log.mode="console" \
	cfg:default.paths.data="$GF_PATHS_DATA" \
	cfg:default.paths.logs="$GF_PATHS_LOGS" \
	cfg:default.paths.plugins="$GF_PATHS_PLUGINS" \
	cfg:default.paths.provisioning="$GF_PATHS_PROVISIONING"
