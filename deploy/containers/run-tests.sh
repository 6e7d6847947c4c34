#!/usr/bin/env bash
# The container path of the test suite, as `./setup.sh test` runs it after the main run:
# the end-to-end and crash tests with Redis and Postgres started by testcontainers, then the
# daemon's image smoke test (tests/image). Arguments go to pytest.
#
# Engine: the one that answers (DOCKER_HOST or the default socket), else a private dockerd
# for this run only (engine.sh). Images: as root on Debian, built here from Debian's packages
# (build-images.sh: no image registry needed); elsewhere redis:7 and postgres:16 from the
# registry and the daemon's image built from the Dockerfile's default base.
# No engine, a failed build or a container left behind is a failure, never a skip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
python=${PYTHON:-.venv/bin/python}

# shellcheck source=engine.sh
. "$here/engine.sh"
trap engine_down EXIT
engine_up

export TESTCONTAINERS_RYUK_DISABLED=true   # its image may not be pullable; cleanup is checked below
export STREAMPROC_TEST_SERVERS=containers
start=$SECONDS
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    "$here/build-images.sh"
    export STREAMPROC_TEST_REDIS_IMAGE=streamproc-test/redis:7
    export STREAMPROC_TEST_POSTGRES_IMAGE=streamproc-test/postgres:15
else
    DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-1} docker build -q -t streamproc:test . >/dev/null
fi
export STREAMPROC_TEST_IMAGE=streamproc:test
echo "images ready in $((SECONDS - start)) s" >&2

status=0
"$python" -m pytest tests/test_e2e.py tests/test_crash.py tests/image "$@" || status=$?
left=$(docker ps -aq --filter label=org.testcontainers=true)
if [ -n "$left" ]; then
    echo "containers left behind by the tests: $left" >&2
    docker rm -f $left >/dev/null
    status=1
fi
exit $status
