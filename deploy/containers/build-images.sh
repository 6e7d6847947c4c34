#!/usr/bin/env bash
# Build, from Debian's and PyPI's packages only, every image the container tests use:
#   streamproc-test/debian:bookworm   minimal Debian root (debootstrap) imported as a base image
#   streamproc-test/redis:7           redis-server from Debian (7.0)
#   streamproc-test/postgres:15       postgresql from Debian (15)
#   streamproc:test                   the repository's Dockerfile on that base
# No image registry is needed: the base comes from the Debian archive this machine's apt
# already uses (read from its apt sources), and every build uses host networking only.
# Always builds from scratch (no layer cache), so a run proves the recipes, not a leftover.
# Needs root (debootstrap), debootstrap, python3 and a Docker engine (DOCKER_HOST honoured).
# Prints how long each step took.
set -euo pipefail
export DOCKER_BUILDKIT=0   # the classic builder: host networking, no buildx plugin needed
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
release=bookworm
base=streamproc-test/debian:$release
# The CA bundle the host's pip uses (PIP_CERT, pip's config), else the system bundle.
ca_bundle=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
ca_bundle=${ca_bundle:-/etc/ssl/certs/ca-certificates.crt}
image_ca=/usr/local/share/ca-bundle/host.crt

step() {
    local name=$1 start=$SECONDS
    shift
    "$@"
    printf '    %-32s %4d s\n' "$name" $((SECONDS - start)) >&2
}

make_base() {
    local work mirror
    work=$(mktemp -d)
    # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
    trap "rm -rf '$work'" RETURN
    mirror=$(python3 "$here/apt-sources.py" --mirror "$release")
    debootstrap --variant=minbase "$release" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -20 "$work/debootstrap.log" >&2
        return 1
    }
    python3 "$here/apt-sources.py" "$release" >"$work/root/etc/apt/sources.list"
    # Trust what this machine trusts, so pip in a build reaches the index the way the host does.
    install -D -m 0644 "$ca_bundle" "$work/root$image_ca"
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    tar -C "$work/root" --numeric-owner -c . | docker import --change "ENV PIP_CERT=$image_ca" --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
}

build() {
    local tag=$1 file=$2 context=$3 log
    log=$(mktemp)
    docker build --no-cache --network host --build-arg "BASE_IMAGE=$base" -t "$tag" -f "$file" "$context" \
        >"$log" 2>&1 || {
        tail -40 "$log" >&2
        rm -f "$log"
        return 1
    }
    rm -f "$log"
}

echo "building images (base from $(python3 "$here/apt-sources.py" --mirror "$release"))" >&2
step "$base" make_base
step "streamproc-test/redis:7" build streamproc-test/redis:7 "$here/redis.Dockerfile" "$here"
step "streamproc-test/postgres:15" build streamproc-test/postgres:15 "$here/postgres.Dockerfile" "$here"
step "streamproc:test" build streamproc:test "$repo/Dockerfile" "$repo"
