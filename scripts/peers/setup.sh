#!/usr/bin/env bash
# Installs every peer of the peer tests (npm run test:peers) into $ML_PEERS_CACHE, in parallel:
# Apache Kafka (Maven Central), fake-gcs-server (Go module proxy), the Python peers (PyPI).
# A cached peer costs nothing. Prints how long each took; exits non-zero if one failed.
source "$(dirname "$0")/common.sh"
logs="$(mktemp -d)"
pids=()
names=(kafka fake-gcs python)
for name in "${names[@]}"; do
  ( started=$(date +%s%N)
    if "$PEERS_SCRIPTS/$name.sh" >"$logs/$name.out" 2>"$logs/$name.err"; then status=ok; else status=failed; fi
    echo "$status $(( ($(date +%s%N) - started) / 1000000 ))" >"$logs/$name.status" ) &
  pids+=($!)
done
wait "${pids[@]}"
failed=0
for name in "${names[@]}"; do
  read -r status ms <"$logs/$name.status"
  log "$name: $status in $(awk "BEGIN {printf \"%.1f\", $ms / 1000}") s ($(cat "$logs/$name.out"))"
  if [ "$status" != ok ]; then failed=1; sed 's/^/  /' "$logs/$name.err" >&2; fi
done
rm -rf "$logs"
exit $failed
