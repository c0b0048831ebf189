#!/usr/bin/env bash
# Installs moto's server mode (the AWS emulator the AWS tests run against) into a Python venv kept
# outside git: ${ML_PEERS_CACHE:-$HOME/.cache/ml-peers}/moto-venv. Idempotent: a venv that already
# holds the pinned version is reused. Prints the path of moto_server on stdout.
# Kept separate from the Python peers' venv (TensorFlow, onnx) so that the two can be merged later.
set -euo pipefail
MOTO_VERSION=5.2.5
cache="${ML_PEERS_CACHE:-$HOME/.cache/ml-peers}"
venv="$cache/moto-venv"
python="${PYTHON:-python3}"
stamp="$venv/.moto-$MOTO_VERSION"
if [[ ! -f "$stamp" || ! -x "$venv/bin/moto_server" ]]; then
  mkdir -p "$cache"
  rm -rf "$venv"
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "moto[server]==$MOTO_VERSION" >&2
  touch "$stamp"
fi
echo "$venv/bin/moto_server"
