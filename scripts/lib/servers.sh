# shellcheck shell=bash
# Servers and installs shared by scripts/test and scripts/soak (sourced, never
# executed). The sourcing script sets `script_name` (for the summary line) and
# sources scripts/lib/common.sh first; these functions keep their state in the
# globals below and stop every server they started on exit.

started_at=$SECONDS
current_step="setup"
state_dir=""
server_pids=()
server_names=()
# Functions run first on exit (e.g. stop_docker, scripts/lib/docker.sh).
cleanup_hooks=()
script_name=${script_name:-$(basename "$0")}

# --------------------------------------------------------------------------
# Cleanup: stop every server we started, remove the state dir, print the
# final summary line.
# --------------------------------------------------------------------------
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for i in "${!cleanup_hooks[@]}"; do
        "${cleanup_hooks[$i]}" || true
    done
    for i in "${!server_pids[@]}"; do
        stop_pid "${server_pids[$i]}" "${server_names[$i]}"
    done
    stop_postgres
    if [[ -n $state_dir && -d $state_dir ]]; then
        rm -rf "$state_dir"
    fi
    if [[ -n ${EDGEPUSH_TEST_AWS_DIR:-} && -d ${EDGEPUSH_TEST_AWS_DIR:-} ]]; then
        rm -rf "$EDGEPUSH_TEST_AWS_DIR"
    fi
    local took=$((SECONDS - started_at))
    if [[ $rc -eq 0 ]]; then
        log "$script_name: OK: all steps passed in ${took}s"
    else
        log "$script_name: FAILED during: $current_step (exit $rc, after ${took}s)"
    fi
    exit "$rc"
}
trap cleanup EXIT

# A signal to this script (Ctrl-C, a CI timeout's TERM) must act at once, not
# after the running cargo command ends: cargo runs as a waited background
# child (see run_cargo), and the signal is passed on to it and its children
# (the test binaries) before the servers are stopped.
cargo_pid=""
on_signal() {
    local code=$1
    if [[ -n $cargo_pid ]] && kill -0 "$cargo_pid" 2>/dev/null; then
        pkill -TERM -P "$cargo_pid" 2>/dev/null || true
        kill -TERM "$cargo_pid" 2>/dev/null || true
        wait "$cargo_pid" 2>/dev/null || true
    fi
    exit "$code"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# run_cargo ARGS...: `cargo ARGS...`, interruptible by the traps above.
run_cargo() {
    run_waited cargo "$@"
}

# run_waited CMD...: CMD as a waited background child, interruptible by the
# traps above (and its children signalled with it).
run_waited() {
    local rc=0
    "$@" &
    cargo_pid=$!
    wait "$cargo_pid" || rc=$?
    cargo_pid=""
    return "$rc"
}

# --------------------------------------------------------------------------
# Install what is missing.
# --------------------------------------------------------------------------
ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
    fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after apt-get install"
    log "redis-server: $(command -v redis-server) ($(redis-server --version | sed -n 's/.*\(v=[^ ]*\).*/\1/p'))"
}

# ensure_net_tools: `ip` and `iptables`, which the network fault tests use
# to put a node on a test host of its own and cut it off.
ensure_net_tools() {
    local missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    if ((${#missing[@]} > 0)); then
        apt_install "${missing[@]}"
    fi
}

ensure_rust_components() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup"
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if [[ ${#missing[@]} -gt 0 ]]; then
        if command -v rustup >/dev/null 2>&1; then
            log "rustup component add ${missing[*]}"
            rustup component add "${missing[@]}" >&2 ||
                warn "rustup component add ${missing[*]} failed; lint steps may fail"
        else
            warn "missing ${missing[*]} and no rustup to add them; lint steps may fail"
        fi
    fi
}

# ---- Python tools -----------------------------------------------------------
# cargo-lambda (tests run a function under `cargo lambda watch`) and the AWS
# CLI (a test pushes with `aws apigatewaymanagementapi post-to-connection`),
# from PyPI into a private venv: see scripts/install-python-tools.
ensure_python_tools() {
    local bin
    bin=$("$repo_root/scripts/install-python-tools")
    PATH="$bin:$PATH"
    export PATH
    export EDGEPUSH_AWS_CLI="$bin/aws"
    export EDGEPUSH_CARGO_LAMBDA="$bin/cargo-lambda"
    log "python tools: $bin (cargo-lambda, aws)"
}

# ---- AWS emulator -------------------------------------------------------------
# LocalStack on the host (no Docker), or moto when LocalStack cannot run:
# see scripts/start-localstack. It prints KEY=VALUE lines on stdout.
start_aws_emulator() {
    local out line
    out=$("$repo_root/scripts/start-localstack")
    while IFS= read -r line; do
        case $line in
        EDGEPUSH_TEST_AWS_*=*) export "${line?}" ;;
        esac
    done <<<"$out"
    [[ -n ${EDGEPUSH_TEST_AWS_ENDPOINT:-} ]] || die "scripts/start-localstack printed no endpoint"
    if [[ -n ${EDGEPUSH_TEST_AWS_PID:-} ]]; then
        server_pids+=("$EDGEPUSH_TEST_AWS_PID")
        server_names+=("aws-emulator")
    fi
    log "AWS emulator (${EDGEPUSH_TEST_AWS_KIND:-?}): $EDGEPUSH_TEST_AWS_ENDPOINT"
}

# --------------------------------------------------------------------------
# Start servers.
# --------------------------------------------------------------------------

# start_server NAME LOG CMD...: start CMD in the background, logging to LOG.
start_server() {
    local name=$1 logfile=$2
    shift 2
    "$@" >"$logfile" 2>&1 &
    server_pids+=("$!")
    server_names+=("$name")
    last_pid=$!
}

# wait_ready NAME PID LOG TIMEOUT CHECK...: poll CHECK until it succeeds; fail
# with the server's log when the server exits or TIMEOUT seconds pass.
# Returns 2 when the server exited (so the caller may retry on another port).
wait_ready() {
    local name=$1 pid=$2 logfile=$3 limit=$4
    shift 4
    local deadline=$((SECONDS + limit))
    while ! "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            warn "$name exited before accepting connections; its log ($logfile):"
            sed 's/^/    /' "$logfile" >&2 || true
            return 2
        fi
        if ((SECONDS >= deadline)); then
            warn "$name did not accept connections within ${limit}s; its log ($logfile):"
            sed 's/^/    /' "$logfile" >&2 || true
            die "$name failed to start"
        fi
        sleep 0.2
    done
}

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

start_redis() {
    local port logfile rc
    for _ in 1 2 3; do
        port=$(free_port)
        logfile="$state_dir/redis-$port.log"
        log "starting redis-server on 127.0.0.1:$port"
        start_server redis-server "$logfile" \
            redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
            --dir "$state_dir"
        rc=0
        wait_ready redis-server "$last_pid" "$logfile" 30 redis_ping "$port" || rc=$?
        if [[ $rc -eq 0 ]]; then
            export EDGEPUSH_TEST_REDIS_URL="redis://127.0.0.1:$port"
            return
        fi
    done
    die "redis-server failed to start (3 attempts)"
}

# ---- PostgreSQL for FerretDB ------------------------------------------------
# FerretDB's SQLite backend scans a whole collection for every query (about
# 0.8 s per replay read at 10,000 messages); its PostgreSQL backend pushes
# filters down (about 20 ms). So the tests run FerretDB on a private
# PostgreSQL cluster (Debian's postgresql, installed when missing), and fall
# back to SQLite, with a warning, when PostgreSQL cannot run here.
# EDGEPUSH_FERRETDB_BACKEND=sqlite forces the fallback.
pg_bin_dir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]] && printf '%s\n' "$dir"
}

pg_dir=""
pg_ctl_cmd=()

# start_postgres: starts a fresh private cluster with a `ferretdb` database
# and sets pg_url to it, or fails. (Not run in a subshell: the cleanup needs
# pg_dir and pg_ctl_cmd.)
pg_url=""
start_postgres() {
    local bin port run_as=() logfile
    bin=$(pg_bin_dir) || {
        apt_install postgresql
        bin=$(pg_bin_dir) || return 1
    }
    pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/edgepush-pg.XXXXXX")
    if [[ $(id -u) -eq 0 ]]; then
        # PostgreSQL refuses to run as root: run it as Debian's postgres user.
        id postgres >/dev/null 2>&1 || return 1
        chown postgres "$pg_dir"
        run_as=(runuser -u postgres --)
    fi
    logfile="$pg_dir/postgres.log"
    "${run_as[@]}" "$bin/initdb" -D "$pg_dir/data" -A trust -U postgres >"$pg_dir/initdb.log" 2>&1 || {
        warn "initdb failed; its log:"
        sed 's/^/    /' "$pg_dir/initdb.log" >&2
        return 1
    }
    port=$(free_port)
    pg_ctl_cmd=("${run_as[@]}" "$bin/pg_ctl" -D "$pg_dir/data")
    # Durability settings off: a test cluster, thrown away after the run.
    "${pg_ctl_cmd[@]}" -l "$logfile" -w -t 60 \
        -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null 2>&1 || {
        warn "PostgreSQL did not start; its log:"
        sed 's/^/    /' "$logfile" >&2 || true
        return 1
    }
    "${run_as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres ferretdb || return 1
    # Indexes FerretDB's pushed-down filters can use (see the file);
    # EDGEPUSH_FERRETDB_GIN=0 leaves FerretDB's own indexes alone.
    if [[ ${EDGEPUSH_FERRETDB_GIN:-1} == 1 ]]; then
        "${run_as[@]}" "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d ferretdb \
            -v ON_ERROR_STOP=1 <"$repo_root/scripts/lib/ferretdb-gin.sql" >/dev/null || {
            warn "could not add the GIN index trigger to PostgreSQL; FerretDB scans whole tables"
        }
    fi
    pg_url="postgres://postgres@127.0.0.1:$port/ferretdb"
}

stop_postgres() {
    if [[ ${#pg_ctl_cmd[@]} -gt 0 ]]; then
        "${pg_ctl_cmd[@]}" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [[ -n $pg_dir && -d $pg_dir ]]; then
        rm -rf "$pg_dir"
    fi
}

start_ferretdb() {
    local bin port dir logfile rc backend handler_args
    current_step="installing FerretDB"
    bin=$("$repo_root/scripts/install-ferretdb")
    current_step="starting servers"
    export EDGEPUSH_FERRETDB_BIN="$bin"
    backend=${EDGEPUSH_FERRETDB_BACKEND:-postgresql}
    if [[ $backend == postgresql ]]; then
        if start_postgres; then
            log "PostgreSQL for FerretDB: $pg_url"
            # Private FerretDB servers of the tests use it too.
            export EDGEPUSH_FERRETDB_POSTGRESQL_URL="$pg_url"
        else
            warn "PostgreSQL is not available; FerretDB runs on SQLite (slower: whole-collection scans)"
            backend=sqlite
        fi
    fi
    export EDGEPUSH_FERRETDB_BACKEND="$backend"
    for _ in 1 2 3; do
        port=$(free_port)
        dir="$state_dir/ferretdb-$port"
        mkdir -p "$dir"
        logfile="$state_dir/ferretdb-$port.log"
        if [[ $backend == postgresql ]]; then
            handler_args=(--handler=postgresql --postgresql-url="$pg_url")
        else
            handler_args=(--handler=sqlite --sqlite-url="file:$dir/")
        fi
        log "starting FerretDB ($backend) on 127.0.0.1:$port"
        start_server ferretdb "$logfile" \
            "$bin" "${handler_args[@]}" --listen-addr="127.0.0.1:$port" \
            --telemetry=disable --state-dir="$dir" --debug-addr=- --log-level=warn
        rc=0
        wait_ready ferretdb "$last_pid" "$logfile" 60 tcp_accepts "$port" || rc=$?
        if [[ $rc -eq 0 ]]; then
            export EDGEPUSH_TEST_MONGODB_URI="mongodb://127.0.0.1:$port"
            return
        fi
    done
    die "FerretDB failed to start (3 attempts)"
}

start_mongod() {
    local bin port dir logfile rc
    bin=$(command -v mongod)
    export EDGEPUSH_MONGOD_BIN="$bin"
    for _ in 1 2 3; do
        port=$(free_port)
        dir="$state_dir/mongod-$port"
        mkdir -p "$dir"
        logfile="$state_dir/mongod-$port.log"
        log "starting mongod on 127.0.0.1:$port"
        start_server mongod "$logfile" \
            "$bin" --dbpath "$dir" --port "$port" --bind_ip 127.0.0.1 --nounixsocket --quiet
        rc=0
        wait_ready mongod "$last_pid" "$logfile" 60 tcp_accepts "$port" || rc=$?
        if [[ $rc -eq 0 ]]; then
            export EDGEPUSH_TEST_MONGODB_URI="mongodb://127.0.0.1:$port"
            return
        fi
    done
    die "mongod failed to start (3 attempts)"
}

