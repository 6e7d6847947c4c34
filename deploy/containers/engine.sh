# Source this file: `. deploy/containers/engine.sh && engine_up` makes `docker` answer.
# - A Docker engine that already answers (DOCKER_HOST or the default socket) is used as is.
# - Otherwise (a fresh CI machine) Debian's docker.io is installed if needed and a private
#   dockerd is started for this run only: its own data root, exec root and socket in a
#   temporary directory, so nothing from an earlier run is reused. It has no default bridge
#   and no NAT or forwarding (--bridge=none --iptables=false --ip-forward=false): containers
#   use host networking or a network Compose makes for its project, and nothing is routed
#   off the machine. `engine_down` stops it and removes its directory.
# Any failure to get an engine is an error (non-zero), never a skip.

engine_dir=""
engine_pid=""

engine_up() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "no Docker engine answers: start one (or run as root to get a private dockerd)" >&2
        return 1
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "no Docker engine answers and dockerd is not installed" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    fi
    engine_dir=$(mktemp -d /tmp/streamproc-docker.XXXXXX)
    dockerd --data-root "$engine_dir/data" --exec-root "$engine_dir/exec" --pidfile "$engine_dir/dockerd.pid" \
        --host "unix://$engine_dir/docker.sock" --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
        >"$engine_dir/dockerd.log" 2>&1 &
    engine_pid=$!
    export DOCKER_HOST="unix://$engine_dir/docker.sock"
    local tries=0
    until docker info >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ $tries -gt 120 ] || ! kill -0 "$engine_pid" 2>/dev/null; then
            echo "dockerd did not start; its log:" >&2
            tail -30 "$engine_dir/dockerd.log" >&2
            return 1
        fi
        sleep 0.5
    done
}

engine_down() {
    if [ -n "$engine_pid" ]; then
        kill "$engine_pid" 2>/dev/null || true
        wait "$engine_pid" 2>/dev/null || true
        engine_pid=""
    fi
    if [ -n "$engine_dir" ]; then
        # dockerd leaves its host network namespace mounted under the exec root.
        local mounts
        mounts=$(findmnt -rn -o TARGET | grep -F "$engine_dir/" | sort -r || true)
        for mnt in $mounts; do umount "$mnt" || true; done
        rm -rf "$engine_dir"
        engine_dir=""
    fi
}
