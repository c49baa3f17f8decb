#!/usr/bin/env bash
# shellcheck disable=SC2016 # the check scripts are single-quoted on purpose: they expand in the containers
# Builds local stand-ins for the container images the Synaxic program pulls,
# tagged exactly as the program's defaults (Pulumi.yaml, lib/config.ts), from
# Debian packages only (trixie, and forky for the Prometheus family, so that
# each stand-in has its default's major version): no container registry is
# contacted. Writes
# them as ONE `docker save` archive for the engine rig to `docker load` into
# each host's dockerd:
#
#   $SYNAXIC_RIG_IMAGES/images-<key>.tar    (default /var/cache/synaxic-rig/images)
#
# <key> is the start of the sha256 over this script, every file beside it that
# goes into an image (Dockerfiles, entrypoints, the Grafana stand-in; not
# README.md), test/rig/appStub.server.mjs and the Debian mirror settings. An
# archive with that key is reused as is. The archive's path is the last line
# on stdout (the only line on stdout); progress, the image table and the
# timings go to stderr, apt/debootstrap/docker output to build.log in the
# cache directory.
#
# How (see README.md for what differs from the official images):
# 1. Host tools (docker.io, debootstrap, openssl) are installed when missing.
# 2. `debootstrap --variant=minbase trixie` once; its root is cached in the
#    cache directory as debootstrap-trixie-minbase-<key>.tar.
# 3. That root, with trixie, trixie-updates and trixie-security sources (and
#    forky pinned at priority 100, for the packages named <package>/forky),
#    gets `apt-get update` and `upgrade` in a chroot, a slim dpkg config (no
#    docs, man pages or message catalogs) and a policy-rc.d that starts no
#    service; apt then downloads, still in the chroot, each image's packages
#    (--download-only, --no-install-recommends) against that exact state.
# 4. A temporary dockerd (own data root, exec root, socket and pidfile under a
#    temporary directory; --iptables=false --bridge=none, --experimental for
#    --squash) imports the root as synaxic-rig-build/base:trixie and builds
#    each image from its folder's Dockerfile with `docker build --network none
#    --squash`: users and groups with the official ids first, then
#    `apt-get install` of the downloaded .debs, then the official layout.
#    Squashing leaves one layer per image on top of the shared base (and the
#    shared Node.js layer for grafana, the app and node), so the archive holds the
#    base once. busybox:1.36.1 (the local host provider's anchor image) is
#    Debian's busybox-static imported as a tiny root.
# 5. Every image is checked in that dockerd (users, paths, versions, and the
#    behaviour the program relies on: the Redis entrypoint's drop to redis,
#    Redis TLS, the exporters honouring the program's environment variables
#    against real servers, Prometheus with the program's flags, Grafana's
#    health and provisioning, the app's /dev/tcp health check), then saved.
#
# Environment:
#   SYNAXIC_RIG_IMAGES                   cache directory (default /var/cache/synaxic-rig/images)
#   SYNAXIC_RIG_BUILD_DOCKER_HOST        build in this daemon (e.g. unix:///run/docker.sock)
#                                        instead of a temporary one; without
#                                        --experimental there, images are not squashed
#   SYNAXIC_RIG_DEBIAN_MIRROR            default http://deb.debian.org/debian
#   SYNAXIC_RIG_DEBIAN_SECURITY_MIRROR   default http://deb.debian.org/debian-security
#   SYNAXIC_RIG_TMPDIR                   where the temporary directory goes (default /var/tmp)
#   SYNAXIC_RIG_KEEP                     number of archives kept in the cache directory (default 3)
set -euo pipefail

START_SECONDS=$SECONDS
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
readonly HERE REPO
readonly SUITE=trixie
readonly MIRROR="${SYNAXIC_RIG_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
readonly SECURITY_MIRROR="${SYNAXIC_RIG_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
readonly CACHE="${SYNAXIC_RIG_IMAGES:-/var/cache/synaxic-rig/images}"
LOG="$CACHE/build.log"
readonly APP_STUB="$REPO/test/rig/appStub.server.mjs"
readonly KEEP="${SYNAXIC_RIG_KEEP:-3}"
readonly BASE_TAG=synaxic-rig-build/base:$SUITE
readonly BUSYBOX_TAG=busybox:1.36.1
readonly CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The program's image defaults (lib/config.ts DEFAULT_IMAGES), each built as a stand-in.
readonly T_POSTGRES=postgres:17.12-trixie
readonly T_REDIS=redis:8.10.2-trixie
readonly T_NGINX=nginx:1.31.10
readonly T_PROMETHEUS=prom/prometheus:v3.13.2
readonly T_ALERTMANAGER=prom/alertmanager:v0.33.1
readonly T_NODE_EXPORTER=prom/node-exporter:v1.11.1
readonly T_POSTGRES_EXPORTER=quay.io/prometheuscommunity/postgres-exporter:v0.19.1
readonly T_REDIS_EXPORTER=oliver006/redis_exporter:v1.86.0
readonly T_GRAFANA=grafana/grafana:13.0.1
# Packages taken from Debian's next release (forky) rather than trixie, so that
# the stand-ins run the defaults' major versions: trixie has Prometheus 2.53,
# forky Prometheus 3 (and the exporters and Alertmanager of the same season).
# They are Go programs depending on libc6 only; the apt source is pinned low
# (priority 100) so nothing else comes from it, and it is gone from the base
# before the base is imported. A mirror that keeps a dated copy of testing
# serves a Release whose Valid-Until has passed: that source alone is read
# with Check-Valid-Until: no (apt's sources.list(5)); its signature is still
# checked.
readonly NEXT_SUITE=forky

# The images: folder | tag | parent (base or node) | Debian packages downloaded for it.
# "node" is the family base of grafana, app and node-slim (internal tag, not saved by name).
readonly IMAGES=(
	"node|synaxic-rig-build/node:$SUITE|base|nodejs"
	"postgres|$T_POSTGRES|base|gosu locales postgresql-17 less libnss-wrapper xz-utils zstd pgbackrest"
	"redis|$T_REDIS|base|gosu redis-server redis-tools curl openssl ca-certificates"
	"nginx|$T_NGINX|base|nginx"
	"prometheus|$T_PROMETHEUS|base|prometheus/$NEXT_SUITE promtool/$NEXT_SUITE"
	"alertmanager|$T_ALERTMANAGER|base|prometheus-alertmanager/$NEXT_SUITE"
	"node-exporter|$T_NODE_EXPORTER|base|prometheus-node-exporter/$NEXT_SUITE"
	"postgres-exporter|$T_POSTGRES_EXPORTER|base|prometheus-postgres-exporter/$NEXT_SUITE"
	"redis-exporter|$T_REDIS_EXPORTER|base|prometheus-redis-exporter/$NEXT_SUITE ca-certificates"
	"grafana|$T_GRAFANA|node|node-yaml"
	"app|ghcr.io/synaxic/synaxic:1.0.0|node|"
	"node-slim|node:22.23.2-bookworm-slim|node|"
)

say() { printf '[images %4ds] %s\n' "$((SECONDS - START_SECONDS))" "$*" >&2; }
die() {
	say "ERROR: $*"
	exit 1
}
field() { cut -d'|' -f"$2" <<<"$1"; }

# Runs a command with its output appended to the log; on failure shows the log's tail.
logged() {
	local what="$1"
	shift
	printf '\n===== %s: %s\n' "$(date -u +%FT%TZ)" "$what" >>"$LOG"
	if ! "$@" >>"$LOG" 2>&1; then
		tail -n 40 "$LOG" | sed 's/^/    | /' >&2
		die "$what failed (full output in $LOG)"
	fi
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and dockerd need it)"
mkdir -p "$CACHE"

# ---------------------------------------------------------------- host tools
ensure_host_tools() {
	# command:package; a command already there (e.g. docker-ce's dockerd) is used as it is.
	local missing=() pair
	for pair in dockerd:docker.io docker:docker.io debootstrap:debootstrap openssl:openssl; do
		if ! command -v "${pair%%:*}" >/dev/null 2>&1 && [[ " ${missing[*]} " != *" ${pair#*:} "* ]]; then missing+=("${pair#*:}"); fi
	done
	if [ ${#missing[@]} -gt 0 ]; then
		say "installing ${missing[*]} (log: $CACHE/host-tools.log)"
		local LOG="$CACHE/host-tools.log"
		export DEBIAN_FRONTEND=noninteractive
		logged "apt-get update" apt-get update
		logged "apt-get install ${missing[*]}" apt-get install -y --no-install-recommends "${missing[@]}"
	fi
	local cmd
	for cmd in dockerd debootstrap chroot flock openssl sha256sum dpkg-deb; do
		command -v "$cmd" >/dev/null || die "$cmd is missing after installing the host tools"
	done
}

# ---------------------------------------------------------------- cache key
input_files() {
	printf '%s\n' "$HERE/build.sh"
	find "$HERE" -type f ! -name README.md ! -path "$HERE/build.sh" | LC_ALL=C sort
	printf '%s\n' "$APP_STUB"
}

cache_key() {
	local f
	{
		while IFS= read -r f; do
			[ -f "$f" ] || die "input file $f is missing"
			printf '%s %s %s\n' "$(sha256sum <"$f" | cut -c1-64)" "$(stat -c %a "$f")" "${f#"$REPO"/}"
		done < <(input_files)
		printf 'suite=%s mirror=%s security=%s\n' "$SUITE" "$MIRROR" "$SECURITY_MIRROR"
	} | sha256sum | cut -c1-16
}

ensure_host_tools
[ -f "$APP_STUB" ] || die "$APP_STUB (the app stand-in's source) is missing"
KEY="$(cache_key)"
readonly KEY
readonly ARCHIVE="$CACHE/images-$KEY.tar"
if [ -s "$ARCHIVE" ]; then
	say "cache hit: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)) in $((SECONDS - START_SECONDS))s"
	printf '%s\n' "$ARCHIVE"
	exit 0
fi

# One build at a time per cache directory; another may have finished meanwhile.
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
	say "another build holds $CACHE/.build.lock: waiting"
	flock 9
fi
if [ -s "$ARCHIVE" ]; then
	say "cache hit (built meanwhile): $ARCHIVE"
	printf '%s\n' "$ARCHIVE"
	exit 0
fi
: >"$LOG"
say "building images for key $KEY (log: $LOG)"

# ---------------------------------------------------------------- temporary state and cleanup
WORK="$(mktemp -d "${SYNAXIC_RIG_TMPDIR:-/var/tmp}/synaxic-images.XXXXXX")"
readonly WORK
DOCKERD_PID=""
STEP=""
DOCKER=""
EXTERNAL_DAEMON=""
VERIFY_PREFIX="synaxic-images-verify-$$"

cleanup() {
	local rc=$? i pid m
	set +e
	trap - EXIT INT TERM
	if [ -n "$EXTERNAL_DAEMON" ] && [ -n "$DOCKER" ]; then
		# Someone else's daemon: remove only the verification containers.
		"$DOCKER" ps -aq --filter "name=$VERIFY_PREFIX" 2>/dev/null | xargs -r "$DOCKER" rm -f >/dev/null 2>&1
	fi
	if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
		kill -TERM "$DOCKERD_PID"
		for i in $(seq 1 60); do
			kill -0 "$DOCKERD_PID" 2>/dev/null || break
			sleep 0.5
		done
		kill -0 "$DOCKERD_PID" 2>/dev/null && kill -KILL "$DOCKERD_PID"
	fi
	# dockerd's own containerd, if it outlived dockerd.
	if [ -s "$WORK/docker/exec/containerd/containerd.pid" ]; then
		pid="$(cat "$WORK/docker/exec/containerd/containerd.pid")"
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "$WORK" "/proc/$pid/cmdline" 2>/dev/null; then kill -KILL "$pid"; fi
	fi
	# Anything still mounted under the temporary directory (chroot /proc, overlay layers), deepest first.
	while IFS= read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done < <(awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r)
	rm -rf "$WORK"
	if [ "$rc" -ne 0 ]; then say "failed (exit $rc)${STEP:+ during: $STEP}; log: $LOG"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 1. debootstrap (cached)
ROOTFS_KEY="$(printf '%s minbase %s %s' "$SUITE" "$MIRROR" "$(dpkg-query -W -f='${Version}' debootstrap)" | sha256sum | cut -c1-12)"
readonly ROOTFS_TAR="$CACHE/debootstrap-$SUITE-minbase-$ROOTFS_KEY.tar"
ROOTFS_NOTE="debootstrap root reused"
if [ -s "$ROOTFS_TAR" ]; then
	say "debootstrap root: reusing $(basename "$ROOTFS_TAR")"
else
	say "debootstrap --variant=minbase $SUITE (once; cached as $(basename "$ROOTFS_TAR"))"
	logged "debootstrap" debootstrap --variant=minbase "$SUITE" "$WORK/debootstrap" "$MIRROR"
	logged "tar the debootstrap root" tar -C "$WORK/debootstrap" --numeric-owner -cf "$ROOTFS_TAR.partial" .
	mv -f "$ROOTFS_TAR.partial" "$ROOTFS_TAR"
	rm -rf "$WORK/debootstrap"
	ROOTFS_NOTE="cold: debootstrap included"
fi

# ---------------------------------------------------------------- 2. the base root and the downloads
ROOT="$WORK/root"
readonly ROOT
mkdir -p "$ROOT"
logged "unpack the debootstrap root" tar -C "$ROOT" --numeric-owner -xpf "$ROOTFS_TAR"

in_root() { chroot "$ROOT" /usr/bin/env -i PATH="$CHROOT_PATH" LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"; }
root_apt() { in_root apt-get -q -y -o APT::Sandbox::User=root "$@"; }

rm -f "$ROOT/etc/apt/sources.list"
cat >"$ROOT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$ROOT/etc/apt/sources.list.d/synaxic-next.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $NEXT_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
Check-Valid-Until: no
EOF
cat >"$ROOT/etc/apt/preferences.d/synaxic-next" <<EOF
Package: *
Pin: release n=$NEXT_SUITE
Pin-Priority: 100
EOF
cat >"$ROOT/etc/apt/apt.conf.d/synaxic-slim" <<'EOF'
Acquire::Languages "none";
EOF
# Packages never start services while an image is built.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
# No documentation, man pages or message catalogs (as Debian's -slim images).
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/synaxic-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

say "base: apt-get update and upgrade in the chroot"
logged "apt-get update (chroot)" root_apt update
logged "apt-get upgrade (chroot)" root_apt upgrade
find "$ROOT/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOT"/usr/share/{man,groff,info,lintian,linda,locale}/*

# download NAME PACKAGES...: the .debs apt would install on the base for them, into $WORK/debs/NAME.
download() {
	local name="$1"
	shift
	mkdir -p "$ROOT/var/cache/synaxic-debs/$name/partial"
	if [ $# -gt 0 ]; then
		logged "download $name: $*" root_apt --no-install-recommends --download-only \
			-o Dir::Cache::archives="/var/cache/synaxic-debs/$name/" install "$@"
	fi
	rm -rf "$ROOT/var/cache/synaxic-debs/$name/partial" "$ROOT/var/cache/synaxic-debs/$name/lock"
	mkdir -p "$WORK/debs"
	mv "$ROOT/var/cache/synaxic-debs/$name" "$WORK/debs/$name"
}

say "downloading the images' packages"
node_packages=""
for spec in "${IMAGES[@]}"; do
	name="$(field "$spec" 1)"
	parent="$(field "$spec" 3)"
	packages="$(field "$spec" 4)"
	if [ "$name" = node ]; then node_packages="$packages"; fi
	if [ "$parent" = node ]; then
		# shellcheck disable=SC2086 # word lists
		download "$name" $node_packages $packages
		# What the node layer installs is not installed again.
		for deb in "$WORK/debs/node"/*.deb; do rm -f "$WORK/debs/$name/$(basename "$deb")"; done
	else
		# shellcheck disable=SC2086
		download "$name" $packages
	fi
	say "  $name: $(find "$WORK/debs/$name" -name '*.deb' | wc -l) packages, $(du -sh "$WORK/debs/$name" | cut -f1)"
done
download busybox busybox-static

# The base as imported: no package lists, caches, logs or host files.
rm -f "$ROOT/etc/apt/sources.list.d/synaxic-next.sources" "$ROOT/etc/apt/preferences.d/synaxic-next"
rm -rf "$ROOT/var/cache/synaxic-debs" "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb
rm -f "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old "$ROOT/var/log/bootstrap.log"
find "$ROOT/var/log" -type f -exec truncate -s 0 {} +
: >"$ROOT/etc/resolv.conf"
printf 'localhost\n' >"$ROOT/etc/hostname"

# ---------------------------------------------------------------- 3. the build daemon
DOCKER="$(command -v /usr/bin/docker || command -v docker)"
SQUASH=(--squash)
if [ -n "${SYNAXIC_RIG_BUILD_DOCKER_HOST:-}" ]; then
	export DOCKER_HOST="$SYNAXIC_RIG_BUILD_DOCKER_HOST"
	EXTERNAL_DAEMON=1
	"$DOCKER" version >/dev/null 2>&1 || die "no Docker daemon answers at $DOCKER_HOST"
	if [ "$("$DOCKER" version -f '{{.Server.Experimental}}')" != true ]; then
		say "warning: $DOCKER_HOST is not --experimental: images are not squashed (larger, each carries its .debs layer)"
		SQUASH=()
	fi
	say "building in the given daemon $DOCKER_HOST"
else
	mkdir -p "$WORK/docker/data" "$WORK/docker/exec"
	setsid dockerd \
		--data-root "$WORK/docker/data" \
		--exec-root "$WORK/docker/exec" \
		--host "unix://$WORK/docker/docker.sock" \
		--pidfile "$WORK/docker/docker.pid" \
		--iptables=false --ip-masq=false --bridge=none \
		--experimental \
		--containerd-namespace synaxic-images-build \
		--containerd-plugins-namespace synaxic-images-build-plugins \
		</dev/null >"$CACHE/dockerd.log" 2>&1 &
	DOCKERD_PID=$!
	export DOCKER_HOST="unix://$WORK/docker/docker.sock"
	for _ in $(seq 1 120); do
		if "$DOCKER" version >/dev/null 2>&1; then break; fi
		kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$CACHE/dockerd.log" >&2; die "the temporary dockerd exited"; }
		sleep 0.5
	done
	"$DOCKER" version >/dev/null 2>&1 || die "the temporary dockerd did not answer within 60s ($CACHE/dockerd.log)"
	say "temporary dockerd $("$DOCKER" version -f '{{.Server.Version}}') up (storage $("$DOCKER" info -f '{{.Driver}}'))"
fi
export DOCKER_BUILDKIT=0

# ---------------------------------------------------------------- 4. images
say "importing the base root as $BASE_TAG"
import_base() {
	tar -C "$ROOT" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
		"$DOCKER" import --change "ENV PATH=$CHROOT_PATH" --change 'CMD ["bash"]' - "$BASE_TAG"
}
logged "docker import $BASE_TAG" import_base
rm -rf "$ROOT"

build_image() {
	local name="$1" tag="$2" ctx="$WORK/ctx/$1" t0=$SECONDS
	mkdir -p "$ctx"
	cp -a "$HERE/$name/." "$ctx/"
	cp -a "$WORK/debs/$name" "$ctx/debs"
	if [ "$name" = app ]; then cp "$APP_STUB" "$ctx/appStub.server.mjs"; fi
	logged "docker build $tag" "$DOCKER" build --network none "${SQUASH[@]}" --force-rm -t "$tag" "$ctx"
	rm -rf "$ctx"
	say "  built $tag in $((SECONDS - t0))s"
}

build_busybox() {
	local deb dir="$WORK/busybox" applet
	deb="$(find "$WORK/debs/busybox" -name 'busybox-static_*.deb' | head -n 1)"
	[ -n "$deb" ] || die "busybox-static was not downloaded"
	mkdir -p "$WORK/busybox-deb" "$dir"/{bin,dev,etc,home,proc,root,sys,tmp,usr/sbin,var/spool/mail,var/www}
	dpkg-deb -x "$deb" "$WORK/busybox-deb"
	# /bin/busybox up to bookworm, /usr/bin/busybox since trixie's merged /usr.
	local bin
	for bin in "$WORK/busybox-deb/usr/bin/busybox" "$WORK/busybox-deb/bin/busybox"; do
		if [ -f "$bin" ]; then break; fi
	done
	install -m 0755 "$bin" "$dir/bin/busybox"
	"$dir/bin/busybox" --list >"$WORK/busybox.applets"
	grep -qx sh "$WORK/busybox.applets"
	grep -qx sleep "$WORK/busybox.applets"
	while IFS= read -r applet; do
		[ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
	done <"$WORK/busybox.applets"
	chmod 1777 "$dir/tmp"
	chmod 0700 "$dir/root"
	cat >"$dir/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
	cat >"$dir/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
mail:x:8:
wheel:x:10:root
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
EOF
	tar -C "$dir" --numeric-owner --owner=0 --group=0 -c . |
		"$DOCKER" import --change 'CMD ["sh"]' - "$BUSYBOX_TAG"
}

say "building the images"
for spec in "${IMAGES[@]}"; do
	build_image "$(field "$spec" 1)" "$(field "$spec" 2)"
done
# Called plainly (not through logged) so that set -e applies inside.
printf '\n===== busybox root and import\n' >>"$LOG"
STEP="busybox image"
build_busybox >>"$LOG" 2>&1
STEP=""
say "  built $BUSYBOX_TAG (imported)"

# ---------------------------------------------------------------- 5. checks
V="$WORK/verify"
mkdir -p "$V"
chmod 0755 "$V"
declare -A VERSION=()

vname() { printf '%s-%s' "$VERIFY_PREFIX" "$1"; }
# check TAG DESCRIPTION SCRIPT: runs SCRIPT with sh in TAG (as the image's user); its "VERSION: " line is kept.
check() {
	local tag="$1" what="$2" script="$3" out
	printf '\n===== check %s: %s\n' "$tag" "$what" >>"$LOG"
	if ! out="$(timeout 120 "$DOCKER" run --rm --network none --entrypoint sh "$tag" -c "$script" 2>&1)"; then
		printf '%s\n' "$out" >>"$LOG"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/    | /' >&2
		die "check of $tag failed: $what"
	fi
	printf '%s\n' "$out" >>"$LOG"
	VERSION[$tag]="$(printf '%s\n' "$out" | sed -n 's/^VERSION: //p' | head -n 1)"
	[ -n "${VERSION[$tag]}" ] || die "check of $tag printed no version"
}
expect_version() {
	grep -qE "$2" <<<"${VERSION[$1]}" || die "$1: expected version /$2/, found: ${VERSION[$1]}"
}
# wait_until SECONDS DESCRIPTION COMMAND...
wait_until() {
	local limit="$1" what="$2" i
	shift 2
	for ((i = 0; i < limit * 4; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.25
	done
	"$@" >>"$LOG" 2>&1 || true
	die "timed out after ${limit}s waiting for $what"
}
# http CONTAINER PORT PATH [HEADER]: an HTTP/1.0 GET over bash's /dev/tcp on the container's loopback.
http() {
	"$DOCKER" exec "$1" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit
		{ printf "GET %s HTTP/1.0\r\nHost: localhost\r\n" "$1"; if [ -n "$2" ]; then printf "%s\r\n" "$2"; fi; printf "\r\n"; } >&3
		cat <&3' "$2" "$3" "${4:-}"
}
http_has() {
	local out
	out="$(http "$1" "$2" "$3" "${5:-}" 2>&1)" || return 1
	grep -qE "$4" <<<"$out"
}
logs_tail() { "$DOCKER" logs "$1" 2>&1 | tail -n 20 >>"$LOG"; }

say "checking the images"
check "$T_POSTGRES" "users, paths, binaries, locale, initdb as the program runs it" '
set -e
[ "$(id -u postgres):$(id -g postgres)" = 999:999 ]
for c in bash gosu getent cut find stat ls chown chmod touch grep initdb postgres pg_ctl psql pg_isready pg_basebackup pg_receivewal pg_rewind locale pgbackrest dpkg-query; do
	command -v "$c" >/dev/null || { echo "missing $c"; exit 1; }
done
echo "PATH=$PATH"
[ "$(stat -c %U:%G /var/run/postgresql)" = postgres:postgres ]
[ "$(stat -c %U:%a /var/lib/postgresql/data)" = postgres:1777 ]
[ ! -e /etc/postgresql/17/main ]
[ ! -e /var/lib/postgresql/17 ]
locale -a | grep -qx en_US.utf8
gosu postgres initdb --pgdata=/tmp/pgcheck --username=postgres --auth-local=peer --auth-host=reject --encoding=UTF8 --locale=C.UTF-8 --data-checksums >/dev/null
echo "PGBACKREST: $(dpkg-query -W -f='"'"'${Version}'"'"' pgbackrest)"
echo "VERSION: $(postgres --version)"'
expect_version "$T_POSTGRES" '\(PostgreSQL\) 17\.'

check "$T_REDIS" "users, paths, binaries" '
set -e
[ "$(id -u redis):$(id -g redis)" = 999:999 ]
[ "$(pwd)" = /data ]
[ "$(stat -c %U:%G /data)" = redis:redis ]
command -v gosu redis-server redis-cli redis-check-rdb setpriv curl openssl >/dev/null
curl --help all | grep -q -- --aws-sigv4
echo "REDIS BACKUP PACKAGES: $(dpkg-query -W -f='"'"'${Package}=${Version} '"'"' curl openssl ca-certificates)"
echo "VERSION: $(redis-server --version)"'
expect_version "$T_REDIS" 'v=8\.'

check "$T_NGINX" "user, log links, configuration" '
set -e
[ "$(id -u nginx):$(id -g nginx)" = 101:101 ]
[ "$(readlink /var/log/nginx/access.log)" = /dev/stdout ]
[ "$(readlink /var/log/nginx/error.log)" = /dev/stderr ]
nginx -t 2>&1
echo "VERSION: $(nginx -v 2>&1)"'
expect_version "$T_NGINX" 'nginx/1\.'

check "$T_PROMETHEUS" "user nobody, /prometheus, promtool" '
set -e
[ "$(id -u):$(id -g)" = 65534:65534 ]
[ "$(pwd)" = /prometheus ]
[ "$(stat -c %u:%g /prometheus)" = 65534:65534 ]
/bin/promtool --version | head -n 1
echo "VERSION: $(/bin/prometheus --version 2>&1 | head -n 1)"'
expect_version "$T_PROMETHEUS" 'version 3\.'

check "$T_ALERTMANAGER" "user nobody, /alertmanager, amtool" '
set -e
[ "$(id -u):$(id -g)" = 65534:65534 ]
[ "$(pwd)" = /alertmanager ]
[ "$(stat -c %u:%g /alertmanager)" = 65534:65534 ]
/bin/amtool check-config /etc/alertmanager/alertmanager.yml
echo "VERSION: $(/bin/alertmanager --version 2>&1 | head -n 1)"'
expect_version "$T_ALERTMANAGER" 'version 0\.33\.'

check "$T_NODE_EXPORTER" "user nobody" '
set -e
[ "$(id -u)" = 65534 ]
echo "VERSION: $(/bin/node_exporter --version 2>&1 | head -n 1)"'
expect_version "$T_NODE_EXPORTER" 'version 1\.11\.'

check "$T_POSTGRES_EXPORTER" "user nobody" '
set -e
[ "$(id -u)" = 65534 ]
echo "VERSION: $(/bin/postgres_exporter --version 2>&1 | head -n 1)"'
expect_version "$T_POSTGRES_EXPORTER" 'version 0\.19\.'

check "$T_REDIS_EXPORTER" "user 59000:59000" '
set -e
[ "$(id -u):$(id -g)" = 59000:59000 ]
echo "VERSION: $(/redis_exporter -version 2>&1 | sed -n "s/.*\(Redis Metrics Exporter [^ ]*\).*/\1/p")"'
expect_version "$T_REDIS_EXPORTER" 'Exporter v?1\.86\.'

check "$T_GRAFANA" "user 472:0, paths" '
set -e
[ "$(id -u):$(id -g)" = 472:0 ]
[ "$(pwd)" = /usr/share/grafana ]
[ "$(stat -c %u:%g:%a /var/lib/grafana)" = 472:0:777 ]
[ "$(stat -c %u:%g:%a /etc/grafana/provisioning)" = 472:0:777 ]
echo "VERSION: $(grafana --version) on node $(node --version)"'
expect_version "$T_GRAFANA" '13\.0\.1'

check ghcr.io/synaxic/synaxic:1.0.0 "user appuser 1001, bash and timeout, no curl" '
set -e
[ "$(id -un):$(id -u):$(id -g)" = appuser:1001:1001 ]
[ "$(pwd)" = /app ]
command -v bash timeout grep >/dev/null
if command -v curl >/dev/null; then echo "curl is present"; exit 1; fi
test -r /app/appStub.server.mjs
echo "VERSION: app stub (test/rig/appStub.server.mjs) on node $(node --version)"'

check node:22.23.2-bookworm-slim "node on PATH, bash and timeout, no curl, user node 1000" '
set -e
command -v node bash timeout >/dev/null
if command -v curl >/dev/null; then echo "curl is present"; exit 1; fi
[ "$(id -u node):$(id -g node)" = 1000:1000 ]
echo "VERSION: Debian node $(node --version)"'

check "$BUSYBOX_TAG" "busybox applets" '
set -e
sleep 0
echo "VERSION: $(busybox | head -n 1)"'

say "  static checks passed; running the images"

# PostgreSQL through the image's own entrypoint, and the exporter with the program's environment.
mkdir -p "$V/pg"
printf 'verify-password\n' >"$V/pg/password"
cat >"$V/pg/queries.yaml" <<'EOF'
synaxic_verify:
  query: "SELECT 1::float AS one"
  metrics:
    - one:
        usage: "GAUGE"
        description: "Stand-in check of PG_EXPORTER_EXTEND_QUERY_PATH."
EOF
chmod 0755 "$V/pg" && chmod 0644 "$V/pg"/*
PG="$(vname pg)"
logged "run postgres" "$DOCKER" run -d --name "$PG" --network none -e POSTGRES_PASSWORD=verify-password "$T_POSTGRES"
wait_until 60 "postgres to accept connections" "$DOCKER" exec "$PG" pg_isready -q -h 127.0.0.1 -p 5432
"$DOCKER" exec "$PG" bash -c '[ "$(stat -c %U /var/lib/postgresql/data)" = postgres ] && [ "$(stat -c %a /var/lib/postgresql/data)" = 700 ]' ||
	die "postgres entrypoint did not hand the data directory to postgres"
PGX="$(vname pgexp)"
logged "run postgres-exporter" "$DOCKER" run -d --name "$PGX" --network "container:$PG" -v "$V/pg:/etc/synaxic:ro" \
	-e PG_EXPORTER_WEB_LISTEN_ADDRESS=127.0.0.1:9187 \
	-e 'DATA_SOURCE_URI=127.0.0.1:5432/postgres?sslmode=disable' \
	-e DATA_SOURCE_USER=postgres \
	-e DATA_SOURCE_PASS_FILE=/etc/synaxic/password \
	-e PG_EXPORTER_EXTEND_QUERY_PATH=/etc/synaxic/queries.yaml \
	"$T_POSTGRES_EXPORTER"
wait_until 30 "postgres-exporter: pg_up 1 on PG_EXPORTER_WEB_LISTEN_ADDRESS" http_has "$PGX" 9187 /metrics '^pg_up 1'
http_has "$PGX" 9187 /metrics '^synaxic_verify_one(\{[^}]*\})? 1$' || { logs_tail "$PGX"; die "postgres-exporter ignored PG_EXPORTER_EXTEND_QUERY_PATH"; }
say "  postgres: docker-entrypoint initdb and start as postgres; postgres-exporter: env honoured (pg_up 1, extend queries)"

# Redis over TLS as the program runs it (started as root, drops to redis), and the exporter with the program's environment.
mkdir -p "$V/redis"
(
	cd "$V/redis"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=verify-ca -keyout ca.key -out ca.crt
	openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
	printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
	openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.crt
	printf '{"rediss://127.0.0.1:6380":"verify-password","rediss://exporter@127.0.0.1:6380":"verify-password"}\n' >passwords.json
) >>"$LOG" 2>&1 || die "openssl could not make the Redis test certificates"
chmod 0755 "$V/redis" && chmod 0644 "$V/redis"/*
RD="$(vname redis)"
logged "run redis" "$DOCKER" run -d --name "$RD" --network none -v "$V/redis:/etc/synaxic/tls:ro" "$T_REDIS" \
	redis-server --port 0 --tls-port 6380 --bind 127.0.0.1 \
	--tls-cert-file /etc/synaxic/tls/server.crt --tls-key-file /etc/synaxic/tls/server.key \
	--tls-ca-cert-file /etc/synaxic/tls/ca.crt --tls-auth-clients optional \
	--user default off --user exporter on '>verify-password' '~*' '&*' '+@all' --appendonly yes
# The program's health check, verbatim but for the paths.
wait_until 30 "redis health check (TLS PING)" "$DOCKER" exec "$RD" sh -c "redis-cli --tls --cacert /etc/synaxic/tls/ca.crt -h 127.0.0.1 -p 6380 PING 2>&1 | grep -Eq 'PONG|NOAUTH'"
[ "$("$DOCKER" exec "$RD" sh -c "awk '/^Uid:/ { print \$2 }' /proc/1/status")" = 999 ] || die "redis-server does not run as redis (999)"
"$DOCKER" exec "$RD" sh -c '[ -z "$(find /data ! -user redis)" ]' || die "redis entrypoint left files in /data not owned by redis"
RX="$(vname redisexp)"
logged "run redis_exporter" "$DOCKER" run -d --name "$RX" --network "container:$RD" -v "$V/redis:/etc/synaxic:ro" \
	-e REDIS_EXPORTER_WEB_LISTEN_ADDRESS=127.0.0.1:9121 \
	-e REDIS_ADDR=rediss://127.0.0.1:6380 \
	-e REDIS_USER=exporter \
	-e REDIS_PASSWORD_FILE=/etc/synaxic/passwords.json \
	-e REDIS_EXPORTER_TLS_CA_CERT_FILE=/etc/synaxic/ca.crt \
	-e REDIS_EXPORTER_CONFIG_COMMAND=- \
	"$T_REDIS_EXPORTER"
wait_until 30 "redis_exporter: redis_up 1 over TLS" http_has "$RX" 9121 /metrics '^redis_up 1'
say "  redis: TLS, entrypoint drops to redis (999); redis_exporter: env honoured (redis_up 1 over verified TLS)"

# nginx with the official default command; the access log reaches stdout.
NG="$(vname nginx)"
logged "run nginx" "$DOCKER" run -d --name "$NG" --network none "$T_NGINX"
wait_until 20 "nginx to answer" http_has "$NG" 80 / '^HTTP/1\.[01] 200'
wait_until 10 "the access log on stdout" sh -c "'$DOCKER' logs '$NG' 2>/dev/null | grep -q '\"GET / HTTP/1.0\" 200'"
WORKER_UIDS="$("$DOCKER" exec "$NG" bash -c 'for p in /proc/[0-9]*; do if grep -qa "^nginx: worker process" "$p/cmdline" 2>/dev/null; then awk "/^Uid:/ { print \$2 }" "$p/status"; fi; done')"
if [ -z "$WORKER_UIDS" ] || grep -qvx 101 <<<"$WORKER_UIDS"; then die "nginx workers do not run as nginx (101): uids ${WORKER_UIDS:-none}"; fi
say "  nginx: default site, access log on stdout, workers as nginx (101)"

# Prometheus with the program's flags; a HUP (the program's reload) keeps it up.
PR="$(vname prometheus)"
logged "run prometheus" "$DOCKER" run -d --name "$PR" --network none "$T_PROMETHEUS" \
	--web.listen-address=127.0.0.1:9090 --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus \
	--storage.tsdb.retention.time=30d
wait_until 30 "prometheus to be ready" http_has "$PR" 9090 /-/ready '^HTTP/1\.[01] 200'
"$DOCKER" kill --signal=HUP "$PR" >/dev/null
sleep 1
http_has "$PR" 9090 /-/healthy '^HTTP/1\.[01] 200' || { logs_tail "$PR"; die "prometheus did not survive a HUP"; }
say "  prometheus: program's flags, ready, reload on HUP"

# Alertmanager with the program's flags (loopback, no cluster); the program reloads it with kill -HUP 1 from inside.
AMV="$(vname alertmanager)"
logged "run alertmanager" "$DOCKER" run -d --name "$AMV" --network none "$T_ALERTMANAGER" \
	--config.file=/etc/alertmanager/alertmanager.yml --storage.path=/alertmanager \
	--web.listen-address=127.0.0.1:9093 --cluster.listen-address=
wait_until 30 "alertmanager to be ready" http_has "$AMV" 9093 /-/ready '^HTTP/1\.[01] 200'
# 0.25 logs the first load at start, 0.33 only reloads: one more after the HUP.
AM_LOADS="$("$DOCKER" logs "$AMV" 2>&1 | grep -c 'Completed loading of configuration file' || true)"
"$DOCKER" exec "$AMV" sh -c 'kill -HUP 1'
wait_until 10 "alertmanager to reload on HUP" sh -c "'$DOCKER' logs '$AMV' 2>&1 | grep -c 'Completed loading of configuration file' | grep -qx $((AM_LOADS + 1))"
http_has "$AMV" 9093 /-/healthy '^HTTP/1\.[01] 200' || { logs_tail "$AMV"; die "alertmanager did not survive a HUP"; }
say "  alertmanager: program's flags, ready, reload on HUP"

# node exporter as the program runs it (user 65534, textfile directory).
mkdir -p "$V/textfile"
printf '# TYPE synaxic_certificate_expiry_timestamp_seconds gauge\nsynaxic_certificate_expiry_timestamp_seconds{name="verify"} 1.9e+09\n' >"$V/textfile/certificates.prom"
chmod 0755 "$V/textfile" && chmod 0644 "$V/textfile"/*
NX="$(vname node)"
logged "run node-exporter" "$DOCKER" run -d --name "$NX" --network none --user 65534:65534 -v "$V/textfile:/textfile:ro" "$T_NODE_EXPORTER" \
	--web.listen-address=127.0.0.1:9100 --collector.textfile.directory=/textfile \
	'--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|run|var/lib/docker/.+)($|/)'
wait_until 30 "node-exporter metrics with the textfile" http_has "$NX" 9100 /metrics '^synaxic_certificate_expiry_timestamp_seconds\{name="verify"\}'
say "  node-exporter: program's flags, textfile collector"

# Grafana stand-in with the program's environment and provisioning files.
mkdir -p "$V/grafana/provisioning/datasources" "$V/grafana/provisioning/dashboards" "$V/grafana/dashboards" "$V/grafana/secret" "$V/grafana/bad"
printf 'verify-admin\n' >"$V/grafana/secret/grafana-admin-password"
cat >"$V/grafana/provisioning/datasources/synaxic.yml" <<'EOF'
apiVersion: 1
datasources:
  - name: Prometheus
    uid: synaxic-prometheus
    type: prometheus
    access: proxy
    url: http://127.0.0.1:9090
    isDefault: true
    editable: false
    jsonData:
      httpMethod: POST
      timeInterval: 15s
EOF
cat >"$V/grafana/provisioning/dashboards/synaxic.yml" <<'EOF'
apiVersion: 1
providers:
  - name: synaxic
    type: file
    disableDeletion: true
    allowUiUpdates: false
    options:
      path: /var/lib/synaxic-dashboards
EOF
printf '{"uid":"synaxic-replication","title":"Synaxic replication","panels":[]}\n' >"$V/grafana/dashboards/replication.json"
printf 'apiVersion: 1\ndatasources:\n  - name: [unclosed\n' >"$V/grafana/bad/broken.yml"
chown -R 472:0 "$V/grafana"
chmod -R a+rX "$V/grafana"
chmod 0400 "$V/grafana/secret/grafana-admin-password"
GF_ENV=(
	-e GF_SECURITY_ADMIN_USER=admin -e GF_SECURITY_ADMIN_PASSWORD__FILE=/run/synaxic/grafana-admin-password
	-e GF_SECURITY_DISABLE_GRAVATAR=true -e GF_USERS_ALLOW_SIGN_UP=false -e GF_AUTH_ANONYMOUS_ENABLED=false
	-e GF_PATHS_PROVISIONING=/etc/grafana/provisioning -e GF_LOG_MODE=console
	-e GF_SERVER_HTTP_ADDR=127.0.0.1 -e GF_SERVER_HTTP_PORT=3000
)
GR="$(vname grafana)"
logged "run grafana" "$DOCKER" run -d --name "$GR" --network none "${GF_ENV[@]}" \
	-v "$V/grafana/secret:/run/synaxic:ro" \
	-v "$V/grafana/provisioning/datasources:/etc/grafana/provisioning/datasources:ro" \
	-v "$V/grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards:ro" \
	-v "$V/grafana/dashboards:/var/lib/synaxic-dashboards:ro" \
	"$T_GRAFANA"
wait_until 20 "grafana /api/health" http_has "$GR" 3000 /api/health '"database":"ok"'
http_has "$GR" 3000 /api/datasources '^HTTP/1\.[01] 401' || die "grafana stand-in answered /api/datasources without credentials"
AUTH="Authorization: Basic $(printf 'admin:verify-admin' | base64)"
http_has "$GR" 3000 /api/datasources '"uid":"synaxic-prometheus"' "$AUTH" || { logs_tail "$GR"; die "grafana stand-in: no provisioned datasource with the admin password from GF_SECURITY_ADMIN_PASSWORD__FILE"; }
http_has "$GR" 3000 /api/dashboards/uid/synaxic-replication '"provisioned":true' "$AUTH" || die "grafana stand-in did not load the provisioned dashboard"
printf '\n===== grafana with a broken provisioning file\n' >>"$LOG"
if "$DOCKER" run --rm --network none "${GF_ENV[@]}" -v "$V/grafana/secret:/run/synaxic:ro" \
	-v "$V/grafana/bad:/etc/grafana/provisioning/datasources:ro" "$T_GRAFANA" >>"$LOG" 2>&1; then
	die "grafana stand-in started with a provisioning file that does not parse"
fi
say "  grafana stand-in: /api/health, admin password from file, provisioning loaded, broken YAML refused"

# The app stub with the program's environment; the program's health check, verbatim.
AP="$(vname app)"
logged "run app" "$DOCKER" run -d --name "$AP" --network none \
	-e SERVER_ADDRESS=127.0.0.1 -e SERVER_PORT=8080 -e SPRING_CONFIG_IMPORT=optional:configtree:/run/synaxic/app/ \
	-e 'SPRING_DATASOURCE_URL=jdbc:postgresql://127.0.0.1:5432/synaxic?sslmode=verify-full&sslrootcert=/app/pg-tls/ca.crt' \
	ghcr.io/synaxic/synaxic:1.0.0
APP_HEALTH="timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf '\\''GET /actuator/health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n'\\'' >&3 && grep -q '\\''\"status\":\"UP\"'\\'' <&3'"
wait_until 20 "the app's health check" "$DOCKER" exec "$AP" sh -c "$APP_HEALTH"
say "  app stub: listens on SERVER_ADDRESS:SERVER_PORT, the program's /dev/tcp health check passes"

BB="$(vname busybox)"
logged "run busybox" "$DOCKER" run -d --name "$BB" --network none "$BUSYBOX_TAG" sleep 2147483647
[ "$("$DOCKER" inspect -f '{{.State.Running}}' "$BB")" = true ] || die "busybox anchor command does not keep running"
say "  busybox: the anchor's sleep keeps running"

"$DOCKER" ps -aq --filter "name=$VERIFY_PREFIX" | xargs -r "$DOCKER" rm -f >/dev/null

# ---------------------------------------------------------------- 6. the archive
TAGS=()
for spec in "${IMAGES[@]}"; do
	[ "$(field "$spec" 1)" = node ] || TAGS+=("$(field "$spec" 2)")
done
TAGS+=("$BUSYBOX_TAG")
say "saving ${#TAGS[@]} images"
logged "docker save" "$DOCKER" save -o "$ARCHIVE.partial" "${TAGS[@]}"
chmod 0644 "$ARCHIVE.partial"
mv -f "$ARCHIVE.partial" "$ARCHIVE"

{
	printf '%-56s %9s  %s\n' TAG SIZE VERSION
	for tag in "${TAGS[@]}"; do
		size="$("$DOCKER" image inspect -f '{{.Size}}' "$tag")"
		printf '%-56s %7dMB  %s\n' "$tag" "$((size / 1000000))" "${VERSION[$tag]}"
	done
	printf 'archive %s: %s (layers shared between images are stored once)\n' "$(basename "$ARCHIVE")" "$(du -h "$ARCHIVE" | cut -f1)"
} >"$CACHE/images-$KEY.txt"
sed 's/^/    /' "$CACHE/images-$KEY.txt" >&2

# Older archives beyond the newest $KEEP go.
find "$CACHE" -maxdepth 1 -name 'images-*.tar' -printf '%T@ %p\n' | sort -rn | tail -n +"$((KEEP + 1))" | cut -d' ' -f2- |
	while IFS= read -r old; do
		rm -f "$old" "${old%.tar}.txt"
		say "removed the older archive $(basename "$old")"
	done

say "done: built in $((SECONDS - START_SECONDS))s ($ROOTFS_NOTE)"
printf '%s\n' "$ARCHIVE"
