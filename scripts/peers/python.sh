#!/usr/bin/env bash
# The Python peers (requirements.txt, every version fixed by constraints.txt) in a virtual environment
# $ML_PEERS_CACHE/python-<stamp>/, made with Python 3.11 and PyPI. Prints the venv's python.
# --freeze: after installing, rewrite constraints.txt from the venv (after adding a requirement).
source "$(dirname "$0")/common.sh"
PYTHON="${ML_PEERS_PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || { log "$PYTHON is needed for the Python peers"; exit 1; }
freeze=false
[ "${1:-}" = "--freeze" ] && freeze=true
if $freeze; then constraints=(); else constraints=(-c "$PEERS_SCRIPTS/constraints.txt"); fi
dest="$PEERS_CACHE/python-$(stamp_of "$PEERS_SCRIPTS/requirements.txt" "$PEERS_SCRIPTS/constraints.txt")"
if [ ! -f "$dest/.complete" ] || $freeze; then
  started=$(date +%s)
  rm -rf "$dest"
  "$PYTHON" -m venv "$dest"
  "$dest/bin/pip" install -q --disable-pip-version-check --cache-dir "$PEERS_CACHE/pip" \
    -r "$PEERS_SCRIPTS/requirements.txt" "${constraints[@]}" >&2
  if $freeze; then
    { echo '# Every package of the peers venv at the version tested (pip freeze); see requirements.txt.'
      "$dest/bin/pip" freeze --disable-pip-version-check; } > "$PEERS_SCRIPTS/constraints.txt"
    # The venv's name follows the files: move it to the name the new constraints give it.
    final="$PEERS_CACHE/python-$(stamp_of "$PEERS_SCRIPTS/requirements.txt" "$PEERS_SCRIPTS/constraints.txt")"
    if [ "$final" != "$dest" ]; then rm -rf "$dest"; exec "$0"; fi
  fi
  touch "$dest/.complete"
  log "python peers installed in $(( $(date +%s) - started )) s"
fi
echo "$dest/bin/python"
