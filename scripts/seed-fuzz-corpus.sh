#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the committed test vectors
# (tests/vectors/<name>.hex), plus a few hand-made inputs that need no vector.
#
# Plain bash, sed and coreutils only (CI runs on a fresh Debian image).
# Missing vector files are skipped with a note; nothing here fails because a
# vector is absent. The corpora are gitignored: libFuzzer grows them in place.
#
# Usage: scripts/seed-fuzz-corpus.sh            (from anywhere)

set -euo pipefail

cd "$(dirname "$0")/.."
VECTORS=${VECTORS:-tests/vectors}
CORPUS=fuzz/corpus
BODY_MODE=ff # fuzz/src/lib.rs: BODY_MODE, "this input is a message body"

seeded=0
missing=()

# The hex of a vector file: `#` comments and all whitespace dropped, lower case.
vector_hex() {
    sed -e 's/#.*$//' "$1" | tr -d ' \t\r\n' | tr 'A-F' 'a-f'
}

# Writes the bytes of hex string $2 to file $1.
write_hex() {
    local out=$1 hex=$2
    # \xHH escapes, in chunks (very long printf arguments are slow).
    : >"$out"
    local i chunk=4096
    for ((i = 0; i < ${#hex}; i += chunk)); do
        printf '%b' "$(printf '%s' "${hex:i:chunk}" | sed 's/../\\x&/g')" >>"$out"
    done
}

# seed TARGET NAME HEX: one corpus file, named after where it came from.
seed() {
    local target=$1 name=$2 hex=$3
    mkdir -p "$CORPUS/$target"
    write_hex "$CORPUS/$target/$name" "$hex"
    seeded=$((seeded + 1))
}

# Sets $hex to the hex of vector NAME, or to empty (noted) if it is missing or not hex.
load() {
    local file="$VECTORS/$1.hex"
    hex=
    if [[ ! -f $file ]]; then
        missing+=("$1")
        return 0
    fi
    hex=$(vector_hex "$file")
    if [[ -z $hex || $((${#hex} % 2)) -ne 0 || $hex =~ [^0-9a-f] ]]; then
        echo "note: $file is not an even-length hex string; skipped" >&2
        hex=
    fi
}

# The body of a signed envelope (u8 tag_len | tag | [32] signer | u32 len | body | [64] sig).
envelope_body() {
    local hex=$1 tag_len len at
    tag_len=$((16#${hex:0:2}))
    at=$(((1 + tag_len + 32) * 2))
    len=$((16#${hex:at:8}))
    printf '%s' "${hex:at+8:len*2}"
}

# u16 big-endian length prefix of a hex string, as hex.
u16_len() {
    printf '%04x' $((${#1} / 2))
}

# ------------------------------------------------------------ signed messages
# target = vector name; each gives a whole envelope and its body (BODY_MODE).
for name in enrollment panic location cancel stop trail timed_panic check_in sms_panic sms_channel \
    release_request release \
    shred_receipt cancel_receipt manifest enrollment_commit share_receipt tree_head log_query \
    status_query status_report chat_query chat chat_log; do
    load "$name"
    [[ -n $hex ]] || continue
    seed "$name" "vector-$name" "$hex"
    seed "$name" "vector-$name-body" "$BODY_MODE$(envelope_body "$hex")"
done

# The SMS panic as the text a gateway hands over (base64 of the envelope).
load sms_panic
if [[ -n $hex ]]; then
    mkdir -p "$CORPUS/sms_panic"
    write_hex "$CORPUS/sms_panic/vector-sms_panic-bytes" "$hex"
    base64 -w0 <"$CORPUS/sms_panic/vector-sms_panic-bytes" >"$CORPUS/sms_panic/vector-sms_panic-text"
    rm "$CORPUS/sms_panic/vector-sms_panic-bytes"
    seeded=$((seeded + 1))
fi

# ------------------------------------------------------------ containers and state
for pair in share_delivery:share_delivery enrollment_package:enrollment_package \
    log_entry:log_entry device_state:device_state trustee_entry:trustee_entry \
    device_state:device_state_v1 trustee_entry:trustee_entry_v1 trustee_entry:trustee_entry_v2; do
    target=${pair%%:*}
    name=${pair#*:}
    load "$name"
    [[ -n $hex ]] && seed "$target" "vector-$name" "$hex"
done

# ------------------------------------------------------------ keys
for name in device_key vault_key trustee_key control_room_key incident_key log_key chat_key \
    trustee_public control_room_public device_public log_public; do
    load "$name"
    [[ -n $hex ]] && seed keys "vector-$name" "$hex"
done
# Tags alone are enough for the fuzzer to find its way: tag, then 32 bytes.
tag_hex() {
    printf '%02x' "${#1}"
    printf '%s' "$1" | od -An -tx1 | tr -d ' \n'
}
for tag in device-key vault-key trustee-key control-room-key incident-key log-key; do
    seed keys "made-$tag" "$(tag_hex "sosvault/$tag/v1")$(printf '2a%.0s' {1..32})"
done
# A valid ed25519 point (the base point) followed by 32 bytes: a public pair.
base_point=5866666666666666666666666666666666666666666666666666666666666666
for tag in trustee-public control-room-public; do
    seed keys "made-$tag" "$(tag_hex "sosvault/$tag/v1")$base_point$(printf '09%.0s' {1..32})"
done
seed keys made-raw-public "$base_point"

# ------------------------------------------------------------ sealed plaintexts
for name in location_fix note profile; do
    load "$name"
    [[ -n $hex ]] && seed sealed_plaintexts "vector-$name" "$hex"
done
# Talwandi, Kota: 25.1425, 75.8350, 8 m, at 1790000000.
seed sealed_plaintexts made-location \
    "$(tag_hex sosvault/location-fix/v1)$(printf '%08x%08x%08x%016x' 251425000 758350000 8 1790000000)"
seed sealed_plaintexts made-note "$(tag_hex sosvault/note/v1)01"
profile='{"v":1,"name":"Asha","phone":"+91 90000 00000","hostel":"Shanti, room 12"}'
seed sealed_plaintexts made-profile "$(printf '%s' "$profile" | od -An -tx1 | tr -d ' \n')"

# ------------------------------------------------------------ log entries, heads, queries
# No vectors yet: build one entry of each kind (layouts in crates/sosvault/src/log/).
rep() { printf "$1%.0s" $(seq 1 "$2"); } # rep HEX COUNT: HEX repeated
sha256_hex() {                          # sha256_hex HEX: SHA-256 of those bytes
    local tmp
    tmp=$(mktemp)
    write_hex "$tmp" "$1"
    sha256sum "$tmp" | cut -c1-64
    rm -f "$tmp"
}
entry_tag=$(tag_hex sosvault/log-entry/v1)
at=000000006ab13dd8
student=$(rep 5a 32)
seed log_entry made-share-accepted "${entry_tag}01${student}0000000102${at}"
reason=$(printf '%s' "the panic is too old" | od -An -tx1 | tr -d ' \n')
seed log_entry made-refused "${entry_tag}0301${student}00d1$(printf '%08x' $((${#reason} / 2)))${reason}$(rep 77 32)${at}"
seed log_entry made-shredded "${entry_tag}04${student}00000002$(rep 66 32)${at}"
seed log_entry made-profile-viewed "${entry_tag}05${student}$(rep 07 16)00000008$(printf '%s' operator | od -An -tx1 | tr -d ' \n')${at}"
seed log_entry made-profile-viewed-salted "${entry_tag}0a${student}$(rep 07 16)00000008$(printf '%s' operator | od -An -tx1 | tr -d ' \n')$(rep 5e 16)${at}"
seed log_entry made-guardian-told "${entry_tag}0b${student}$(rep 07 16)$(rep 6b 16)${at}"
# Kind 12: a release, salted (epoch 1, counter 5, panic hash, incident, not a repeat, salt).
seed log_entry made-released-salted "${entry_tag}0c${student}000000010000000000000005$(rep 3a 32)$(rep 07 16)00$(rep 5e 16)${at}"
# Kind 13: a check-in (counter 6, its hash).
seed log_entry made-checked-in "${entry_tag}0d${student}0000000000000006$(rep 2d 32)${at}"
load panic
if [[ -n $hex ]]; then
    # Kind 2 carries the panic's student, epoch and hash ahead of the panic itself.
    tag_len=$((16#${hex:0:2}))
    signer=${hex:(1 + tag_len) * 2:64}
    panic_student=$(sha256_hex "$(tag_hex sosvault/student-id/v1)$signer")
    panic_epoch=$(envelope_body "$hex" | cut -c1-8)
    seed log_entry made-released "${entry_tag}02${panic_student}${panic_epoch}$(sha256_hex "$hex")$(rep 07 16)$(printf '%08x' $((${#hex} / 2)))${hex}${at}"
fi
# Bodies of a tree head (log id | size | root | time) and a log query (trustee | time | nonce).
seed tree_head made-head-body "$BODY_MODE$(rep ab 32)0000000000000003$(rep cd 32)${at}"
seed log_query made-query-body "$BODY_MODE$(rep 1d 32)${at}$(rep 4e 16)"
# A log's answer to a phone's own query (fuzz_targets/log_answer.rs): the
# honest answer as it is (mode 01, nothing flipped), and one flipped once.
seed log_answer made-honest 01
seed log_answer made-flipped 0100ff

# ------------------------------------------------------------ trustee transitions
# Layout (fuzz_targets/trustee_transitions.rs): u8 flags (bit 0: start
# enrolled), then ops: 0 delivery, 1 request, 2 stop (u16 len | bytes each).
for pair in 0:share_delivery 1:release_request 2:stop; do
    op=${pair%%:*}
    name=${pair#*:}
    load "$name"
    [[ -n $hex ]] || continue
    for flags in 00 01; do
        seed trustee_transitions "vector-$name-$flags" "${flags}0${op}$(u16_len "$hex")$hex"
    done
done
# Made with the target's own fixed keys, no vector needed:
#   op 4: signer 0 (the device) | epoch | counter | i16 dt | category | u16 len | room 0 | incident | recipient | i16 dt
#   op 5: signer | epoch | counter | i16 dt | u16 len
#   op 3: delivery k; op 6: replay i; op 7: i16 clock step;
#   op 8: delivery k with its sealed share replaced (u16 len | bytes); op 9: persist.
# panic EPOCH COUNTER DT: op 4, the device's panic issued DT (i16 hex) from now,
# no sealed location, in a request from the pinned room, incident 07..,
# recipient 07.., issued now.
panic() { printf '04%s%02x%02x%s%s%s%s%s' 00 "$1" "$2" "$3" 00 0000 000707 0000; }
# stop EPOCH COUNTER: op 5, the device's stop, issued now, no sealed note.
stop() { printf '05%s%02x%02x%s%s' 00 "$1" "$2" 0000 0000; }
seed trustee_transitions made-release "01$(panic 1 5 0000)"
seed trustee_transitions made-release-retry "01$(panic 1 5 0000)0600"
seed trustee_transitions made-release-stop-release "01$(panic 1 5 0000)$(stop 1 9)$(panic 1 10 0000)09"
seed trustee_transitions made-enroll-release "000300$(panic 1 5 0000)"
seed trustee_transitions made-reenroll "010302$(panic 1 5 0000)$(panic 2 6 0000)0303$(stop 3 7)"
seed trustee_transitions made-stale "01$(panic 1 5 f1ef)$(panic 1 6 0100)07fff0$(panic 1 7 0000)"
seed trustee_transitions made-strangers "01030403050301"
seed trustee_transitions made-relay-swaps-share "000800000461676531"

echo "seeded $seeded corpus files into $CORPUS/"
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "note: no vector for: $(printf "%s\n" "${missing[@]}" | sort -u | tr "\n" " ")(looked in $VECTORS/)"
fi
