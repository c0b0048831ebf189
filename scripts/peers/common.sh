# Shared by the peer setup scripts: where the peers are cached (outside git, kept between runs on
# the same machine), and a stamp helper so that a cached peer costs a file read, not a registry call.
set -euo pipefail
PEERS_CACHE="${ML_PEERS_CACHE:-$HOME/.cache/ml-peers}"
PEERS_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$PEERS_CACHE"

# stamp_of FILE... : a short hash of the files that define a peer (pinned versions), naming its folder.
stamp_of() { cat "$@" | sha256sum | cut -c1-12; }

# log MESSAGE : progress on stderr.
log() { printf 'peers: %s\n' "$*" >&2; }
