# shellcheck shell=bash
# The Docker engine of the image and compose tests (sourced by scripts/test
# after scripts/lib/servers.sh, never executed).
#
# start_docker installs Debian's docker.io, docker-compose and debootstrap
# when missing, starts a private dockerd for this run and makes the local
# stand-ins of the public base images (scripts/docker-base-images). The
# daemon is private so that it changes nothing on the host and parallel runs
# never share one: its socket and exec root are in the run's state dir, it
# creates no bridge and no iptables rules (every container runs on the host
# network), and its data root is one of a few slots under
# ~/.cache/edgepush/docker, taken with a lock, so images and the build cache
# (cargo's registry and target dir of docker/Dockerfile) survive to the next
# run. stop_docker (a cleanup hook) removes the run's containers and stops
# the daemon.
#
# EDGEPUSH_DOCKER_HOST=unix:///path or tcp://... uses that daemon instead
# (nothing is started or stopped then).
#
# Exported for the tests:
#   DOCKER_HOST                     the daemon
#   EDGEPUSH_DOCKER_CLI             the docker client to run (Debian's)
#   EDGEPUSH_DOCKER_COMPOSE         docker-compose (1.29, Debian's)
#   EDGEPUSH_DOCKER_RUNTIME_IMAGE   stand-in of debian:bookworm-slim
#   EDGEPUSH_DOCKER_RUST_IMAGE      stand-in of rust:1-bookworm

docker_pid=""
docker_lock_fd=""

ensure_docker_tools() {
    local missing=()
    [[ -x /usr/sbin/dockerd || -n ${EDGEPUSH_DOCKER_HOST:-} ]] || missing+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if ((${#missing[@]} > 0)); then
        apt_install "${missing[@]}"
    fi
    # Debian's client, which matches its daemon and builds with BuildKit
    # (DOCKER_BUILDKIT=1) without the buildx plugin; a newer client found
    # first on PATH would not.
    if [[ -x /usr/bin/docker ]]; then
        EDGEPUSH_DOCKER_CLI=/usr/bin/docker
    else
        EDGEPUSH_DOCKER_CLI=$(command -v docker) || die "no docker client after apt-get install docker.io"
    fi
    EDGEPUSH_DOCKER_COMPOSE=$(command -v docker-compose) || die "docker-compose not on PATH after apt-get install"
    # docker/Dockerfile uses cache mounts: BuildKit, also for Docker 20.10.
    export EDGEPUSH_DOCKER_CLI EDGEPUSH_DOCKER_COMPOSE DOCKER_BUILDKIT=1
}

docker_answers() { "$EDGEPUSH_DOCKER_CLI" info >/dev/null 2>&1; }

start_docker() {
    local started=$SECONDS
    ensure_docker_tools
    if [[ -n ${EDGEPUSH_DOCKER_HOST:-} ]]; then
        export DOCKER_HOST=$EDGEPUSH_DOCKER_HOST
        docker_answers || die "no Docker daemon answers at EDGEPUSH_DOCKER_HOST=$EDGEPUSH_DOCKER_HOST"
        log "Docker: using the daemon at $DOCKER_HOST"
    else
        start_private_dockerd
    fi
    cleanup_hooks+=(stop_docker)
    log "Docker daemon ready ($((SECONDS - started))s)"

    started=$SECONDS
    local out line
    out=$("$repo_root/scripts/docker-base-images") || die "scripts/docker-base-images failed"
    while IFS= read -r line; do
        case $line in
        EDGEPUSH_DOCKER_*=*) export "${line?}" ;;
        esac
    done <<<"$out"
    [[ -n ${EDGEPUSH_DOCKER_RUNTIME_IMAGE:-} && -n ${EDGEPUSH_DOCKER_RUST_IMAGE:-} ]] ||
        die "scripts/docker-base-images printed no image names"
    log "base images: $EDGEPUSH_DOCKER_RUNTIME_IMAGE, $EDGEPUSH_DOCKER_RUST_IMAGE ($((SECONDS - started))s)"
}

# start_private_dockerd: the first free data-root slot, a daemon on it.
start_private_dockerd() {
    [[ $(id -u) -eq 0 ]] || die "the image tests start a Docker daemon, which needs root (or set EDGEPUSH_DOCKER_HOST)"
    local root slot lock data_root exec_root logfile
    root="$(edgepush_cache_dir)/docker"
    mkdir -p "$root"
    for slot in 0 1 2 3; do
        lock="$root/slot-$slot.lock"
        exec {docker_lock_fd}>"$lock"
        if flock -n "$docker_lock_fd"; then
            data_root="$root/slot-$slot"
            break
        fi
        exec {docker_lock_fd}>&-
        docker_lock_fd=""
    done
    [[ -n ${data_root:-} ]] || die "four test runs hold Docker data roots under $root already; wait for one to end"
    exec_root="$state_dir/docker-exec"
    logfile="$state_dir/dockerd.log"
    export DOCKER_HOST="unix://$state_dir/docker.sock"
    log "starting dockerd (data root $data_root, socket $state_dir/docker.sock)"
    /usr/sbin/dockerd --host "$DOCKER_HOST" --data-root "$data_root" --exec-root "$exec_root" \
        --pidfile "$state_dir/docker.pid" --bridge none --iptables=false --ip6tables=false \
        --ip-masq=false >"$logfile" 2>&1 &
    docker_pid=$!
    local deadline=$((SECONDS + 120))
    until docker_answers; do
        if ! kill -0 "$docker_pid" 2>/dev/null; then
            warn "dockerd exited; its log ($logfile):"
            tail -n 40 "$logfile" | sed 's/^/    /' >&2
            die "dockerd could not start here (root, cgroups and overlayfs are needed; or set EDGEPUSH_DOCKER_HOST)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$logfile" | sed 's/^/    /' >&2
            die "dockerd did not answer within 120s"
        fi
        sleep 0.5
    done
}

# stop_docker: removes the containers the tests left (they label theirs
# edgepush.test) and stops the daemon this run started.
stop_docker() {
    if [[ -n ${EDGEPUSH_DOCKER_CLI:-} ]] && docker_answers; then
        local left
        left=$("$EDGEPUSH_DOCKER_CLI" ps -aq --filter label=edgepush.test 2>/dev/null || true)
        if [[ -n $left ]]; then
            # shellcheck disable=SC2086
            "$EDGEPUSH_DOCKER_CLI" rm -f $left >/dev/null 2>&1 || true
        fi
    fi
    if [[ -n $docker_pid ]]; then
        stop_pid "$docker_pid" dockerd
        # dockerd leaves its network namespace mounts behind in the exec root.
        local mnt
        for mnt in "$state_dir"/docker-exec/netns/*; do
            [[ -e $mnt ]] && umount "$mnt" 2>/dev/null || true
        done
    fi
    docker_pid=""
    if [[ -n $docker_lock_fd ]]; then
        exec {docker_lock_fd}>&-
        docker_lock_fd=""
    fi
}
