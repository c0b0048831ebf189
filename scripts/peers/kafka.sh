#!/usr/bin/env bash
# Apache Kafka (the pinned version in kafka-pom.xml) from Maven Central: the broker jar and its runtime
# dependencies copied into $ML_PEERS_CACHE/kafka-<stamp>/libs. Prints that folder.
source "$(dirname "$0")/common.sh"
command -v java >/dev/null || { log "java (17+) is needed for the Kafka peer"; exit 1; }
command -v mvn >/dev/null || { log "mvn is needed to fetch the Kafka peer"; exit 1; }
dest="$PEERS_CACHE/kafka-$(stamp_of "$PEERS_SCRIPTS/kafka-pom.xml")"
if [ ! -f "$dest/.complete" ]; then
  started=$(date +%s)
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  cp "$PEERS_SCRIPTS/kafka-pom.xml" "$dest.tmp/pom.xml"
  mvn -q -B -f "$dest.tmp/pom.xml" -Dmaven.repo.local="$PEERS_CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest.tmp/libs" >&2
  touch "$dest.tmp/.complete"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  log "kafka installed in $(( $(date +%s) - started )) s"
fi
echo "$dest"
