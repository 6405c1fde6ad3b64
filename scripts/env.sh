# Sourced by scripts/with-libtorch: points the tch build at a libtorch.
#   - LIBTORCH set by the user (e.g. a downloaded CUDA libtorch) wins;
#   - otherwise the torch wheel in .venv (created by `just setup`) is used via LIBTORCH_USE_PYTORCH=1.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${LIBTORCH:-}" ]; then
  if [ ! -e "$LIBTORCH/lib/libtorch_cpu.so" ] && [ ! -e "$LIBTORCH/lib/libtorch_cpu.dylib" ]; then
    echo "error: LIBTORCH=$LIBTORCH has no lib/libtorch_cpu.so; point LIBTORCH at an unpacked libtorch folder (the one holding lib/ and include/), or unset it to use the torch wheel in .venv (just setup)" >&2
    exit 1
  fi
  unset LIBTORCH_USE_PYTORCH
else
  if [ ! -x "$root/.venv/bin/python" ]; then
    echo "error: $root/.venv is missing; run 'just setup' (needs python3 >= 3.9) or set LIBTORCH to a libtorch folder" >&2
    exit 1
  fi
  export LIBTORCH_USE_PYTORCH=1
  export VIRTUAL_ENV="$root/.venv"
  export PATH="$root/.venv/bin:$PATH"
fi
