#!/usr/bin/env bash
# Idempotent set-up: .venv with torch (libtorch for tch) and rust-just; MNIST/digit data extraction.
# A second run finds its stamp and returns at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
TORCH_VERSION=2.13.0
stamp=".venv/.ebm-setup-torch-$TORCH_VERSION-tb"
if [ -n "${LIBTORCH:-}" ]; then
  source scripts/env.sh   # validates LIBTORCH and says what to do if it is wrong
fi
if [ -f "$stamp" ]; then
  exec scripts/fetch-data.sh   # fast when the data is already there
fi
py="${PYTHON:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
  echo "error: '$py' not found; install Python >= 3.9 (e.g. apt-get install python3 python3-venv), or set LIBTORCH to a libtorch folder" >&2
  exit 1
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)'; then
  echo "error: $("$py" --version 2>&1) is too old; ebm-rs needs Python >= 3.9 for the torch wheel" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$py" --version 2>&1)"
  "$py" -m venv .venv || { echo "error: '$py -m venv' failed; install the venv module (apt-get install python3-venv)" >&2; exit 1; }
fi
echo "setup: installing torch==$TORCH_VERSION (libtorch for tch), tensorboard and rust-just into .venv; this takes a few minutes"
.venv/bin/pip install --disable-pip-version-check -q "torch==$TORCH_VERSION" tensorboard rust-just
scripts/fetch-data.sh
touch "$stamp"
echo "setup: done"
