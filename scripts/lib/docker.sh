# shellcheck shell=bash
# The Docker engine of the image and compose tests (sourced by scripts/test
# after scripts/lib/servers.sh, never executed).
#
# start_docker installs Debian's docker.io, docker-compose and debootstrap
# when missing, starts a private dockerd for this run and makes the local
# stand-in of the public runtime base image (scripts/docker-base-images).
# The daemon is private so that it changes nothing on the host and parallel
# runs never share one: its socket and exec root are in the run's state dir,
# it creates no bridge and no iptables rules (every container runs on the
# host network), and its data root is one of a few slots under
# ~/.cache/edgepush/docker, taken with a lock, so the stand-in base image
# survives to the next run.
#
# build_test_image builds docker/Dockerfile as edgepush:test from the debug
# binaries this run compiled (BINARIES=prebuilt): no second compile and no
# build cache. EDGEPUSH_DOCKER_FROM_SOURCE=1 builds it the user's way
# instead (BINARIES=source: a release build inside the image, from a Rust
# stand-in made from the host's toolchain; its BuildKit cache of cargo's
# registry and target dir is kept in the data root, gigabytes).
#
# stop_docker (a cleanup hook) removes the run's containers, the test image
# and (unless EDGEPUSH_DOCKER_FROM_SOURCE=1) the build cache, logs the disk
# the data root holds, and stops the daemon.
#
# EDGEPUSH_DOCKER_HOST=unix:///path or tcp://... uses that daemon instead
# (nothing is started or stopped then; only the test image is removed).
#
# Exported for the tests:
#   DOCKER_HOST                     the daemon
#   EDGEPUSH_DOCKER_CLI             the docker client to run (Debian's)
#   EDGEPUSH_DOCKER_COMPOSE         docker-compose (1.29, Debian's)
#   EDGEPUSH_DOCKER_RUNTIME_IMAGE   stand-in of debian:bookworm-slim
#   EDGEPUSH_DOCKER_RUST_IMAGE      stand-in of rust:1-bookworm (from source only)
#   EDGEPUSH_DOCKER_IMAGE           the image under test (build_test_image)

docker_pid=""
docker_lock_fd=""
docker_data_root=""
docker_test_image=""

ensure_docker_tools() {
    local missing=()
    [[ -x /usr/sbin/dockerd || -n ${EDGEPUSH_DOCKER_HOST:-} ]] || missing+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    # strip: the binaries of the test image (build_test_image).
    command -v strip >/dev/null 2>&1 || missing+=(binutils)
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
    local out line base_args=()
    [[ ${EDGEPUSH_DOCKER_FROM_SOURCE:-0} == 1 ]] && base_args=(--with-rust)
    out=$("$repo_root/scripts/docker-base-images" "${base_args[@]}") || die "scripts/docker-base-images failed"
    while IFS= read -r line; do
        case $line in
        EDGEPUSH_DOCKER_*=*) export "${line?}" ;;
        esac
    done <<<"$out"
    [[ -n ${EDGEPUSH_DOCKER_RUNTIME_IMAGE:-} ]] || die "scripts/docker-base-images printed no image name"
    log "base images: $EDGEPUSH_DOCKER_RUNTIME_IMAGE ${EDGEPUSH_DOCKER_RUST_IMAGE:-} ($((SECONDS - started))s)$(docker_disk)"
}

# docker_disk: ", data root N MB" of the private daemon (nothing for an
# outside one).
docker_disk() {
    [[ -n $docker_data_root && -d $docker_data_root ]] || return 0
    printf ', data root %s MB' "$(docker_disk_mb)"
}
docker_disk_mb() { echo $(($(du -sk "$docker_data_root" 2>/dev/null | cut -f1) / 1024)); }

# build_test_image TARGET_DIR: docker/Dockerfile as edgepush:test, exported
# as EDGEPUSH_DOCKER_IMAGE. By default from TARGET_DIR/debug/{edge-node,
# collect,dispatch} (built by the caller; stripped) in a context of their
# own; with EDGEPUSH_DOCKER_FROM_SOURCE=1 from the repository, compiled
# inside the image.
build_test_image() {
    local target_dir=$1 started=$SECONDS context bin
    local build=("$EDGEPUSH_DOCKER_CLI" build --network host --progress plain -f "$repo_root/docker/Dockerfile"
        --build-arg "RUNTIME_IMAGE=$EDGEPUSH_DOCKER_RUNTIME_IMAGE" -t edgepush:test)
    docker_test_image=edgepush:test
    if [[ ${EDGEPUSH_DOCKER_FROM_SOURCE:-0} == 1 ]]; then
        log "docker build -f docker/Dockerfile (BINARIES=source, from $EDGEPUSH_DOCKER_RUST_IMAGE)"
        context=$repo_root
        build+=(--build-arg "RUST_IMAGE=$EDGEPUSH_DOCKER_RUST_IMAGE" --build-arg BINARIES=source)
    else
        log "docker build -f docker/Dockerfile (BINARIES=prebuilt, $target_dir/debug)"
        context="$state_dir/image-context"
        mkdir -p "$context/bin"
        for bin in edge-node collect dispatch; do
            [[ -x $target_dir/debug/$bin ]] || die "$target_dir/debug/$bin was not built"
            # Symbols and debug info are two thirds of a debug binary.
            strip -o "$context/bin/$bin" "$target_dir/debug/$bin"
        done
        build+=(--build-arg BINARIES=prebuilt)
    fi
    if ! "${build[@]}" "$context" >"$state_dir/docker-build.log" 2>&1; then
        tail -n 60 "$state_dir/docker-build.log" >&2
        die "docker build failed (the end of its log is above)"
    fi
    export EDGEPUSH_DOCKER_IMAGE=edgepush:test
    log "docker build took $((SECONDS - started))s$(docker_disk)"
    if [[ $context != "$repo_root" ]]; then
        rm -rf "$context"
        # The build cache holds two more copies of the binaries (the context
        # and the stage that takes them) and is of no use to the next run,
        # whose binaries differ: only the image stays for the tests.
        if [[ -n $docker_pid ]]; then
            "$EDGEPUSH_DOCKER_CLI" builder prune -af >/dev/null 2>&1 || true
            log "build cache removed$(docker_disk)"
        fi
    fi
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
    docker_data_root=$data_root
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
# edgepush.test), the test image and the build cache (see the top), and
# stops the daemon this run started.
stop_docker() {
    if [[ -n ${EDGEPUSH_DOCKER_CLI:-} ]] && docker_answers; then
        local left
        left=$("$EDGEPUSH_DOCKER_CLI" ps -aq --filter label=edgepush.test 2>/dev/null || true)
        if [[ -n $left ]]; then
            # shellcheck disable=SC2086
            "$EDGEPUSH_DOCKER_CLI" rm -f $left >/dev/null 2>&1 || true
        fi
        if [[ -n $docker_test_image ]]; then
            local before=""
            [[ -n $docker_pid ]] && before=$(docker_disk_mb)
            "$EDGEPUSH_DOCKER_CLI" image rm -f "$docker_test_image" >/dev/null 2>&1 || true
            if [[ -n $docker_pid ]]; then
                if [[ ${EDGEPUSH_DOCKER_FROM_SOURCE:-0} != 1 ]]; then
                    "$EDGEPUSH_DOCKER_CLI" builder prune -af >/dev/null 2>&1 || true
                fi
                log "Docker: $docker_test_image and the build cache removed (data root $before MB -> $(docker_disk_mb) MB)"
            fi
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
