#!/usr/bin/env bash
# Seal a message in a DSSE envelope (ICD §4) with OpenSSL 3 only: for liaison systems not using Python.
#   scripts/sign-envelope.sh MESSAGE.json SIGNING.key KEYID > envelope.json
# MESSAGE.json holds the message bytes exactly as they are to be signed (compact JSON, UTF-8, no final
# newline needed); SIGNING.key is the Ed25519 private key (PKCS#8 PEM, as `broker keys new` writes it).
# Checked by tests/test_integration_docs.py against the golden vector docs/vectors/envelopes/accepted.body.
set -euo pipefail
message=$1 key=$2 keyid=$3
type='application/vnd.coord.message+json; version=1'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in bytes
printf 'DSSEv1 %d %s %d ' "${#type}" "$type" "$(wc -c < "$message")" > "$tmp/pae"
cat "$message" >> "$tmp/pae"
openssl pkeyutl -sign -inkey "$key" -rawin -in "$tmp/pae" -out "$tmp/sig"
printf '{"payloadType":"%s","payload":"%s","signatures":[{"keyid":"%s","sig":"%s"}]}' \
  "$type" "$(base64 -w0 < "$message")" "$keyid" "$(base64 -w0 < "$tmp/sig")"
