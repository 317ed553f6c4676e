#!/usr/bin/env bash
# The bindings for apps, made and tried: builds the library, generates the
# Kotlin, Swift and Python bindings into target/bindings/, checks that each
# carries the whole API, and runs the Python suite (tests/python) through
# the generated Python against the real trustees and dispatch service.
#
#   crates/sosvault-ffi/bindings.sh            # everything
#   crates/sosvault-ffi/bindings.sh generate   # the sources only
set -euo pipefail
cd "$(dirname "$0")/../.."

out=target/bindings
lib=target/debug/libsosvault_ffi.so
cargo build --locked -p sosvault-ffi
cargo build --locked -p sosvault-ffi --features bindgen --bin uniffi-bindgen
rm -rf "$out"
for lang in kotlin swift python; do
    # --no-format: ktlint and swift-format are not needed to generate.
    target/debug/uniffi-bindgen generate --library "$lib" --language "$lang" \
        --out-dir "$out/$lang" --no-format
done

# Every exported call is in each language (camelCase in Kotlin and Swift).
kotlin="$out/kotlin/uniffi/sosvault_ffi/sosvault_ffi.kt"
swift="$out/swift/sosvault_ffi.swift"
for f in "$kotlin" "$swift" "$out/swift/sosvault_ffiFFI.h" "$out/python/sosvault_ffi.py"; do
    [ -s "$f" ] || { echo "bindings.sh: $f was not generated" >&2; exit 1; }
done
for call in verify pendingEnrollment confirmEnrollment panicWithSms locationUpdate trailPoint startTimer checkIn statusQuery \
    readStatus logQuery confirmed readLog controlRoomLogHolder chatQuery readChat chatMessage; do
    for f in "$kotlin" "$swift"; do
        grep -Eq "fun \`$call\`\(|func $call\(" "$f" || {
            echo "bindings.sh: $f has no $call" >&2
            exit 1
        }
    done
done
echo "Kotlin: $kotlin; Swift: $swift and its C header; Python: $out/python"
[ "${1:-}" = generate ] && exit 0

cp "$lib" "$out/python/"
# The demo's binaries, built as `cargo test --workspace` builds them (a
# plain `cargo build --bins` resolves other features and rebuilds half the
# dependencies, then the tests rebuild them back); nothing if they are built.
cargo test --workspace --locked --no-run
SOSVAULT_BINDINGS="$out/python" SOSVAULT_BIN=target/debug \
    python3 -m unittest discover -s crates/sosvault-ffi/tests/python -t crates/sosvault-ffi/tests/python -v
