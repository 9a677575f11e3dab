# shellcheck shell=bash
# The JS client's part of scripts/test (sourced after common.sh and
# servers.sh): Node.js 20+ and Debian's Chromium installed when missing,
# `npm ci` from clients/js/package-lock.json, then the package's unit tests,
# its tests against a real dev mode (EDGEPUSH_EDGE_NODE_BIN, with the test
# Redis and MongoDB for the node-process tests) and the demo console's tests
# in Chromium. A missing capability fails the run; nothing is skipped.

js_dir="$repo_root/clients/js"

# ensure_node: node >= 20 and npm on PATH.
ensure_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if ((major < 20)); then
        die "clients/js needs Node.js 20 or newer; $(command -v node) is $(node --version 2>/dev/null || echo 'not runnable') (Debian's nodejs package is 18: install Node.js 20+ from nodejs.org or NodeSource)"
    fi
    log "node: $(command -v node) ($(node --version)), npm $(npm --version)"
}

# ensure_chromium: Debian's chromium (playwright-core drives it; no browser
# download works here).
ensure_chromium() {
    export CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
    if [[ ! -x $CHROMIUM_BIN ]]; then
        apt_install chromium
    fi
    [[ -x $CHROMIUM_BIN ]] || die "no Chromium at $CHROMIUM_BIN after apt-get install chromium"
    log "chromium: $CHROMIUM_BIN ($("$CHROMIUM_BIN" --version 2>/dev/null | head -1))"
}

# js_step NAME CMD...: one timed step in clients/js.
js_step() {
    local name=$1 started=$SECONDS
    shift
    current_step="clients/js: $name"
    log "$current_step"
    run_waited env -C "$js_dir" "$@"
    log "clients/js: $name took $((SECONDS - started))s"
}

# run_js_tests: install the packages, build, and run every test of
# clients/js (after ensure_node and ensure_chromium).
run_js_tests() {
    local started=$SECONDS
    js_step "npm ci" npm ci --no-audit --no-fund
    js_step "build" npm run --silent build
    js_step "build the tests" npm run --silent build:test
    js_step "unit tests" npm run --silent test:unit
    js_step "tests against dev mode" npm run --silent test:node
    js_step "console tests in Chromium" npm run --silent test:browser
    log "clients/js: all steps took $((SECONDS - started))s"
}
