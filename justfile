# ebm-rs tasks. `just --list` shows them all.
set shell := ["bash", "-euo", "pipefail", "-c"]

cargo := "scripts/with-libtorch cargo"

# List the recipes.
default:
    @just --list

# Create .venv with the torch wheel (libtorch for tch) and rust-just; a second run returns at once.
setup:
    @scripts/setup.sh

# Build everything (release).
build: setup
    {{cargo}} build --workspace --release

# Run the test suite (unit, integration and experiment smoke tests). One test at a time per binary: libtorch's
# random generator is global to the process, and a test that seeds it while another draws from it changes
# the other's stream (statistical tests then see repeated draws and fail at random). One libtorch intra-op
# thread (OMP_NUM_THREADS=1): spinning OpenMP threads on a busy 2-core machine slow small tensors down 20-100×.
test: setup
    OMP_NUM_THREADS=1 {{cargo}} test --workspace --release -- --test-threads=1

# Format check and clippy with warnings as errors.
lint: setup
    cargo fmt --all -- --check
    {{cargo}} clippy --workspace --all-targets --release -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Build in release and run experiment EXP (a binary of crates/experiments), e.g. `just run exp_cd_vs_sm --quick`.
run EXP *ARGS: setup
    {{cargo}} run --release -q -p experiments --bin {{EXP}} -- {{ARGS}}

# Benchmarks: Rust against the PyTorch eager reference, side by side (see BENCHMARKS.md).
bench *ARGS: setup
    {{cargo}} build --release -p experiments --bin bench
    .venv/bin/python bench/run.py {{ARGS}}

# Serve a folder of runs in TensorBoard on localhost (installs tensorboard into .venv on first use), e.g.
# `just tensorboard` (experiments/runs) or `just tensorboard 6006 runs` (what `ebm train` writes).
tensorboard PORT="6006" DIR="experiments/runs": setup
    @.venv/bin/python -c 'import tensorboard' 2>/dev/null || .venv/bin/pip install --disable-pip-version-check -q tensorboard
    mkdir -p {{DIR}}
    .venv/bin/tensorboard --logdir {{DIR}} --host 127.0.0.1 --port {{PORT}}

# The `ebm` command line (train / sample / eval / score / compose / sweep / report), e.g. `just ebm train my.toml`.
ebm *ARGS: setup
    {{cargo}} run --release -q -p ebm-cli --bin ebm -- {{ARGS}}
