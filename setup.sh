#!/usr/bin/env bash
# One command from a fresh clone:
#   ./setup.sh demo    set everything up, then run `streamproc demo`
#   ./setup.sh test    set everything up, then run the whole test suite
#   ./setup.sh         set everything up only
# Extra arguments go to the command (e.g. `./setup.sh test -k crash`, `./setup.sh demo -n 200000`).
# `./setup.sh test` with no arguments runs the suite on local servers, then the end-to-end,
# crash and image tests through a Docker engine (deploy/containers/run-tests.sh).
# The suite runs in STREAMPROC_TEST_WORKERS parallel pytest processes (default 3); 0 runs it serially.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
    cat <<'USAGE'
usage: ./setup.sh [demo|test] [args...]
  ./setup.sh            install what streamproc needs (apt packages, .venv), then stop
  ./setup.sh demo ...   the same, then `streamproc demo ...`
  ./setup.sh test ...   the same plus the test tools, then the test suite (pytest args, e.g. -k crash)
  ./setup.sh --help     this text; installs nothing
USAGE
}
case "${1:-}" in
    -h|--help|help) usage; exit 0 ;;
    ""|demo|test) ;;
    *) usage >&2; exit 2 ;;   # before installing anything
esac

TEST_WORKERS=${STREAMPROC_TEST_WORKERS:-3}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

have_postgres() {
    command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || packages+=(redis-tools)   # redis-cli --cluster create (cluster tests, bench)
have_postgres || packages+=(postgresql)
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || packages+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
if [ "${1:-}" = test ]; then
    # The suite also drives a real Prometheus, promtool and systemd-analyze.
    command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
    command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
    command -v openssl >/dev/null 2>&1 || packages+=(openssl)   # throwaway CA for the TLS tests
    # The producer tests drive the real ioredis and node-redis packages (clients/node).
    if ! command -v node >/dev/null 2>&1; then packages+=(nodejs npm)
    elif ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || packages+=(pgbouncer)   # transaction pooling tests
    command -v redis-sentinel >/dev/null 2>&1 || packages+=(redis-sentinel)   # Sentinel failover tests
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        # The container stage (deploy/containers/run-tests.sh): a Docker engine where none
        # answers, debootstrap to build its images from Debian's packages, Compose for compose.yaml.
        if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then packages+=(docker.io); fi
        command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
        docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)
    fi
fi

if [ ${#packages[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        say "installing ${packages[*]} with apt-get"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
    else
        cat >&2 <<MSG
streamproc needs: ${packages[*]}
Install them with your package manager, for example:
  Fedora/RHEL:  sudo dnf install redis postgresql-server python3.11
  macOS:        brew install redis postgresql@16 python@3.11
  Arch:         sudo pacman -S redis postgresql python
then run this script again.
MSG
        exit 1
    fi
fi

# Approximate uniques are tested against the Postgres `hll` extension, packaged per major version.
if [ "${1:-}" = test ] && command -v apt-get >/dev/null 2>&1; then
    pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
    if [ -n "$pg_major" ] && [ ! -f "/usr/share/postgresql/$pg_major/extension/hll.control" ]; then
        say "installing postgresql-$pg_major-hll with apt-get"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "postgresql-$pg_major-hll"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
say "installing streamproc into .venv"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"

if [ "${1:-}" = test ]; then
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 20 ] || say "warning: Node.js $(node --version) is older than the 20 that clients/node's packages ask for"
    say "installing the Node.js producer clients (npm ci in clients/node)"
    (cd clients/node && npm ci --no-audit --no-fund --loglevel=error)
fi

case "${1:-}" in
    demo) shift; say "streamproc demo"; exec .venv/bin/streamproc demo "$@" ;;
    test)
        shift
        if [ $# -gt 0 ]; then say "running tests"; exec .venv/bin/python -m pytest "$@"; fi
        say "running the test suite (local servers, $TEST_WORKERS workers)"
        status=0
        # pytest-xdist: each worker starts its own session servers; --dist loadfile keeps a file's
        # tests (and its module-scoped servers, such as the Redis Cluster) on one worker; files go out
        # in collection order, tests/chaos (few, long tests per file) first, not fewest tests last.
        STREAMPROC_TEST_SERVERS=local .venv/bin/python -m pytest -n "$TEST_WORKERS" --dist loadfile --no-loadscope-reorder || status=$?
        say "running the end-to-end, crash and image tests in containers"
        start=$SECONDS
        deploy/containers/run-tests.sh || status=$?
        say "container tests took $((SECONDS - start)) s"
        exit $status
        ;;
    "") say "ready: . .venv/bin/activate && streamproc --help" ;;
esac
