# shellcheck shell=bash
# Helpers shared by the project's scripts (sourced, never executed).
#
# Everything here prints to stderr, so that a script's stdout stays free for
# its real output (scripts/install-ferretdb prints only a path there).

# log MESSAGE...: one progress line, `==> ...`, on stderr.
log() { printf '==> %s\n' "$*" >&2; }

# warn MESSAGE...: a warning that does not stop the script.
warn() { printf '==> WARNING: %s\n' "$*" >&2; }

# die MESSAGE...: an error line, then exit 1.
die() {
    printf '==> ERROR: %s\n' "$*" >&2
    exit 1
}

# ensure_tool_paths: put the toolchains' usual homes on PATH when they exist
# but are missing from it (CI runs with a trimmed environment).
ensure_tool_paths() {
    local home="${HOME:-/root}" dir
    for dir in "$home/.cargo/bin" /usr/local/go/bin "$home/go/bin"; do
        if [[ -d "$dir" && ":$PATH:" != *":$dir:"* ]]; then
            PATH="$PATH:$dir"
        fi
    done
    export PATH
}

# edgepush_cache_dir: where downloaded or built tools are kept between runs.
edgepush_cache_dir() {
    printf '%s\n' "${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/edgepush"
}

# apt_install PACKAGE...: install Debian packages, running
# `apt-get update` at most once per script run.
EDGEPUSH_APT_UPDATED=${EDGEPUSH_APT_UPDATED:-0}
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    if [[ $EDGEPUSH_APT_UPDATED != 1 ]]; then
        log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
            die "apt-get update failed"
        EDGEPUSH_APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 ||
        die "apt-get install $* failed"
}

# free_port: print a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
        return
    fi
    # Fallback without python3: a random high port nothing answers on.
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return
        fi
    done
    die "could not find a free TCP port"
}

# tcp_accepts PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
tcp_accepts() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# stop_pid PID NAME: TERM a process we started, wait up to 10 s, then KILL.
stop_pid() {
    local pid=$1 name=$2
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) did not stop on TERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
