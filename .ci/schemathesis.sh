#!/usr/bin/env bash
# schemathesis against both running services, driven by the OpenAPI document
# each serves at /openapi.json. Called by .ci/run; runs by hand the same way.
#
#   .ci/schemathesis.sh                 install, start both services, fuzz both, stop them
#   .ci/schemathesis.sh install         only make the venv (target/schemathesis-venv)
#   .ci/schemathesis.sh run NAME BASE_URL [schemathesis options...]
#                                       fuzz one running service: NAME picks
#                                       .ci/schemathesis/NAME.toml; the options
#                                       go to `schemathesis run` as they are
#
# Every check (`--checks all`), every phase (examples, coverage, fuzzing and
# the stateful phase: `--phases` is left at its default, all four), at most
# SCHEMATHESIS_MAX_EXAMPLES cases per operation (default 100; 10 for the
# trustee's stranger, below): about two and a half minutes for both
# services on the 2-core machine, two of them the dispatch service's. Exits
# non-zero on any failure. The seed is random and printed;
# SCHEMATHESIS_SEED pins it (to replay a failure).
#
# TLS: a `run` line takes the https URL and `--tls-verify "$CA"` (and
# `--request-cert "$CERT" --request-cert-key "$KEY"` for a trustee that asks
# for a client certificate), one line each, in `main` below. Both services
# are fuzzed over TLS with the certificates `sosvault demo` makes at start
# (a CA whose key never leaves the demo; under its directory, `pki/`): the
# dispatch service as the demo runs it, and a trustee of our own as a
# deployment runs one, its write endpoints behind the gate
# (crates/sosvault-trustee/src/gate.rs). That trustee is fuzzed twice: as
# the pinned control room reaches it (its client certificate), every
# operation; and as a stranger (none), its write endpoints only, where
# every request must be answered 401 `client_certificate_required`
# (.ci/schemathesis/trustee-stranger.toml).
#
# What each service's file in .ci/schemathesis/ changes, and why, is written
# in it. In short: no check is turned off. For operations whose body is a
# signed protocol message (or a log range), `positive_data_acceptance` also
# accepts 400: the schema says "base64, at most N characters" and cannot say
# "signed by the student's enrolled device", so a random schema-valid value is
# refused on purpose with 400 `malformed`.
#
# Logout runs last and on its own (the dispatch service's `run` is split in
# two): it ends the session whose token every other operator operation uses.
# That last run has no stateful phase: no link leads to or from logout, and
# schemathesis counts a stateful phase with no link as an error.

set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SCHEMATHESIS_VERSION=4.32.5
VENV=$ROOT/target/schemathesis-venv
ST=$VENV/bin/schemathesis
BIN_DIR=${SOSVAULT_BIN_DIR:-$ROOT/target/debug}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}

install() {
    if [[ -x $ST ]] && [[ $("$ST" --version) == *"version $SCHEMATHESIS_VERSION" ]]; then
        echo "schemathesis $SCHEMATHESIS_VERSION already in $VENV"
        return
    fi
    # Debian's python3 needs python3-venv (ensurepip) for `python3 -m venv`.
    if ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt-get update
        apt-get install -y --no-install-recommends python3 python3-venv
    fi
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    "$ST" --version
}

# run NAME BASE_URL [options...]: fuzz the service at BASE_URL.
run() {
    local name=$1 base=${2%/}
    shift 2
    local seed=()
    if [[ -n ${SCHEMATHESIS_SEED:-} ]]; then
        seed=(--seed "$SCHEMATHESIS_SEED")
    fi
    echo
    echo "--- schemathesis: $name at $base"
    # Its caches (.schemathesis/, .hypothesis/) go under target/, not the work tree.
    mkdir -p "$ROOT/target/schemathesis"
    (
        cd "$ROOT/target/schemathesis"
        "$ST" --no-color --config-file "$ROOT/.ci/schemathesis/$name.toml" run "$base/openapi.json" \
            --url "$base" \
            --checks all \
            --max-examples "$MAX_EXAMPLES" \
            --generation-database none \
            --request-timeout 30 \
            "${seed[@]}" \
            "$@"
    )
}

WORK=
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $WORK ]]; then
        rm -rf "$WORK"
    fi
}

# wait_for FILE REGEX: prints the first match of REGEX (grep -o) in FILE, or
# fails after 60 s.
wait_for() {
    local file=$1 regex=$2 i
    for i in $(seq 1 600); do
        if grep -qoE -e "$regex" "$file" 2>/dev/null; then
            grep -oE -e "$regex" "$file" | head -n 1
            return
        fi
        sleep 0.1
    done
    echo "nothing matching /$regex/ in $file after 60 s; it says:" >&2
    cat "$file" "$file.err" >&2 || true
    return 1
}

main() {
    install
    for bin in sosvault sosvault-trustee; do
        if [[ ! -x $BIN_DIR/$bin ]]; then
            echo "$BIN_DIR/$bin is missing: cargo build --workspace --bins first" >&2
            exit 1
        fi
    done
    WORK=$(mktemp -d)
    trap cleanup EXIT

    # The dispatch service as the demo runs it: three trustees, a manifest,
    # students, units and incidents; it prints its address and a login. Its
    # directory is ours (`--dir`), so its certificates are found in pki/.
    "$BIN_DIR/sosvault" demo --listen 127.0.0.1:0 --students 10 --seconds 1800 \
        --dir "$WORK/demo" >"$WORK/demo.out" 2>"$WORK/demo.out.err" &
    PIDS+=($!)

    # A trustee of our own, over TLS with the demo's certificates: it
    # serves the demo's certificate `trustee-1` (127.0.0.1 and localhost)
    # and takes on its write endpoints only client certificates issued by
    # the demo's CA, which the control room's `control-room` is. Why not
    # fuzz one of the demo's trustees instead: they serve the demo's story
    # while we fuzz (its log grows under the fuzzer, one of them is stopped
    # and started again, releases count against its rate limit), so a
    # failure there could be the story's; this one is touched by the fuzzer
    # alone and started with the same config as before, TLS added by the
    # environment overrides (`SOSVAULT_TRUSTEE_TLS_*`) as the demo adds it
    # to its own. No control room is pinned: the fuzzer cannot sign as one,
    # so the signed bodies behind the gate are refused either way.
    # The demo writes pki/ before it starts its first trustee, so its line
    # `trustee "..." listening on` says the files are complete.
    "$BIN_DIR/sosvault-trustee" init --dir "$WORK/trustee" --name schemathesis \
        --listen 127.0.0.1:0 >"$WORK/trustee.init"
    wait_for "$WORK/demo.out" 'trustee "[^"]+" listening on' >/dev/null
    local pki=$WORK/demo/pki
    SOSVAULT_TRUSTEE_TLS_CERT=$pki/trustee-1.pem \
        SOSVAULT_TRUSTEE_TLS_KEY=$pki/trustee-1.key \
        SOSVAULT_TRUSTEE_TLS_CLIENT_CA=$pki/ca.pem \
        "$BIN_DIR/sosvault-trustee" serve --config "$WORK/trustee/trustee.toml" \
        >"$WORK/trustee.out" 2>"$WORK/trustee.out.err" &
    PIDS+=($!)

    local trustee dispatch password ca=$pki/ca.pem
    trustee=$(wait_for "$WORK/trustee.out" 'listening on https://[^ ]+' | awk '{print $3}')
    dispatch=$(wait_for "$WORK/demo.out" '^Control room: https?://[^ ]+' | awk '{print $3}')
    password=$(wait_for "$WORK/demo.out" '^Login: operator / [^ ]+' | awk '{print $4}')
    # The demo serves the dispatch service over TLS too, with a certificate
    # from the same CA.
    local dispatch_tls=()
    if [[ $dispatch == https://* ]]; then
        dispatch_tls=(--tls-verify "$ca")
    fi

    # An operator session and a unit token for the authenticated operations.
    local tokens
    tokens=$("$VENV/bin/python" - "$dispatch" "$password" "$ca" <<'EOF'
import sys
import requests

url, password, ca = sys.argv[1], sys.argv[2], sys.argv[3]
verify = ca or True
r = requests.post(url + "/v1/operator/login",
                  json={"username": "operator", "password": password}, timeout=30, verify=verify)
r.raise_for_status()
operator = r.json()["token"]
r = requests.post(url + "/v1/operator/units",
                  json={"name": "schemathesis", "kind": "police", "lat": 25.18, "lon": 75.83},
                  headers={"Authorization": "Bearer " + operator}, timeout=30, verify=verify)
r.raise_for_status()
print(operator, r.json()["token"])
EOF
)
    export SOSVAULT_OPERATOR_TOKEN=${tokens% *}
    export SOSVAULT_UNIT_TOKEN=${tokens#* }
    # The SMS gateway's token (the demo's [sms_panic]).
    SOSVAULT_SMS_TOKEN=$(tr -d '[:space:]' <"$WORK/demo/dispatch/sms-inbound.token")
    export SOSVAULT_SMS_TOKEN

    # A stranger's requests to the write endpoints: each answered 401
    # `client_certificate_required`, which the document says for each (the
    # operations it marks with the security scheme `control_room`, the same
    # it tags `control room`, which the stranger's run below picks).
    local failed=0
    "$VENV/bin/python" - "$trustee" "$ca" <<'EOF' || failed=1
import sys
import requests

url, ca = sys.argv[1], sys.argv[2]
doc = requests.get(url + "/openapi.json", timeout=30, verify=ca).json()
gated = [path for path, item in doc["paths"].items()
         if {"control_room": []} in item.get("post", {}).get("security", [])]
tagged = [path for path, item in doc["paths"].items()
          if "control room" in item.get("post", {}).get("tags", [])]
bad = [] if gated else ["no operation of the document asks for the control room's certificate"]
if tagged != gated:
    bad.append(f"tagged `control room`: {tagged}, but asking for its certificate: {gated}")
for path in gated:
    said = doc["paths"][path]["post"]["responses"].get("401", {}).get("description", "")
    if "client_certificate_required" not in said:
        bad.append(f"POST {path}: the document does not say 401 client_certificate_required")
    r = requests.post(url + path, json={}, timeout=30, verify=ca)
    got = (r.status_code, r.json().get("error"))
    if got != (401, "client_certificate_required"):
        bad.append(f"POST {path} without a client certificate: {got}")
for b in bad:
    print(b, file=sys.stderr)
print(f"{len(gated)} write endpoints refuse a stranger 401 client_certificate_required, as documented")
sys.exit(1 if bad else 0)
EOF
    # The trustee as the pinned control room reaches it: its CA and the
    # control room's client certificate, so every operation is fuzzed to the
    # end, the write endpoints behind the gate too (trustee.toml counts a
    # 401 there as a failure: the gate refused the control room).
    run trustee "$trustee" --tls-verify "$ca" \
        --request-cert "$pki/control-room.pem" --request-cert-key "$pki/control-room.key" ||
        failed=1
    # And as a stranger, without a certificate: the write endpoints only
    # (tagged `control room` in the document), each request answered 401
    # before its body is read, whatever the body (trustee-stranger.toml).
    # The gate looks at the method and the path, never the body, so the
    # coverage phase (every documented answer, bodies of each wrong kind)
    # and 10 random bodies per operation say all there is to say, in a few
    # seconds; `--max-examples` given again here wins over run's. No
    # stateful phase: no link leads from one write endpoint to another.
    run trustee-stranger "$trustee" --tls-verify "$ca" --include-tag "control room" \
        --phases examples,coverage,fuzzing --max-examples 10 || failed=1
    run dispatch "$dispatch" "${dispatch_tls[@]}" --exclude-path /v1/operator/logout || failed=1
    # Logout alone: no link leads to or from it, so there is no stateful
    # phase to run for it (schemathesis calls that an error); the stateful
    # phase ran with every other operation above.
    run dispatch "$dispatch" "${dispatch_tls[@]}" --include-path /v1/operator/logout \
        --phases examples,coverage,fuzzing || failed=1
    if [[ $failed != 0 ]]; then
        echo
        echo "schemathesis found failures (above); the services' logs:"
        tail -n 30 "$WORK/trustee.out.err" "$WORK/demo.out.err" || true
        exit 1
    fi
    echo
    echo "schemathesis: no failure on either service"
}

case ${1:-} in
    "") main ;;
    install) install ;;
    run)
        shift
        if [[ $# -lt 2 ]]; then
            echo "usage: $0 run NAME BASE_URL [schemathesis options...]" >&2
            exit 2
        fi
        run "$@"
        ;;
    *)
        echo "usage: $0 [install | run NAME BASE_URL [options...]]" >&2
        exit 2
        ;;
esac
