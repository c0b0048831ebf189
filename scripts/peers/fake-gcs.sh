#!/usr/bin/env bash
# fake-gcs-server (the pinned module version below) built with `go install` from the Go module proxy
# into $ML_PEERS_CACHE/fake-gcs-server-<version>/. Prints the binary's path.
source "$(dirname "$0")/common.sh"
VERSION=v1.52.2
command -v go >/dev/null || { log "go is needed to build the fake-gcs-server peer"; exit 1; }
dest="$PEERS_CACHE/fake-gcs-server-$VERSION"
if [ ! -x "$dest/fake-gcs-server" ]; then
  started=$(date +%s)
  GOBIN="$dest" GOPATH="$PEERS_CACHE/go" GOMODCACHE="$PEERS_CACHE/go/pkg/mod" GOFLAGS=-modcacherw \
    go install "github.com/fsouza/fake-gcs-server@$VERSION" >&2
  log "fake-gcs-server installed in $(( $(date +%s) - started )) s"
fi
echo "$dest/fake-gcs-server"
