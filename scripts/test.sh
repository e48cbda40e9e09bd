#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (a real Secret
# Service, D-Bus, the official Python Hub client), then runs `cargo test` inside a private
# D-Bus session with an unlocked gnome-keyring, so keyring tests hit a real keyring and never
# touch yours.
set -euo pipefail
cd "$(dirname "$0")/.."
# Disk, not time, is what a fresh CI machine runs short of: incremental caches (GBs for the test
# binaries) buy nothing on a one-shot build. CARGO_INCREMENTAL=1 keeps them for local reruns.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Each phase's start, with the seconds so far: CI keeps this output, and the suite must stay
# under 30 minutes on a fresh clone.
phase() { echo "test.sh: [$((SECONDS / 60))m$((SECONDS % 60))s] $*" >&2; }
phase "fmt"

# The hygiene gate, first (it needs nothing installed): the tree is formatted (rustfmt.toml).
cargo fmt --check

phase "system packages"
need=()
command -v dbus-run-session >/dev/null || need+=(dbus)
command -v gnome-keyring-daemon >/dev/null || need+=(gnome-keyring)
command -v secret-tool >/dev/null || need+=(libsecret-tools)
# Headless Chromium opens the compare report and screenshots it (tests/cli/compare.rs).
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
# HEIC/HEIF/AVIF photos (cargo feature `heif`): libheif >= 1.17 from the system when it has one,
# else (Debian bookworm ships 1.15) libheif built from source and linked statically
# (`heif-embedded`), which needs cmake, a C++ compiler and the codec headers (HEVC, AV1).
command -v pkg-config >/dev/null || need+=(pkg-config)
if ! pkg-config --atleast-version=1.17 libheif 2>/dev/null; then
  command -v cmake >/dev/null || need+=(cmake)
  command -v g++ >/dev/null || need+=(g++)
  pkg-config --exists libde265 2>/dev/null || need+=(libde265-dev)
  pkg-config --exists dav1d 2>/dev/null || need+=(libdav1d-dev)
  # libheif also links the x265 encoder when its headers are there, and x265 needs libnuma.
  if pkg-config --exists x265 2>/dev/null && ! pkg-config --exists numa 2>/dev/null; then need+=(libnuma-dev); fi
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if pkg-config --atleast-version=1.17 libheif 2>/dev/null; then HEIF_FEATURE=heif; else HEIF_FEATURE=heif-embedded; fi
export HEIF_FEATURE
# The Python environments the tests use, installed while cargo compiles (downloads and unpacking
# against a CPU-bound build): their output goes to a log shown if they fail.
# - .venv: the official client for the conformance test (small: no torch). HF_HUB_DISABLE_XET=1 is
#   set by the test so uploads take the LFS path the offline Hub speaks. Its trusted-publisher
#   (OIDC) support is tested too, hence a version that has `_oidc`. maturin builds the wheel and
#   nbclient/ipykernel run the notebook (tests/install.rs).
# - .venv-pyref: the reference ML stack (CPU torch, diffusers, transformers, peft; pinned) for the
#   interop test in which real diffusers loads a LoRA that hfsky trained. ~3 GB download.
python_venvs() {
  PY_TEST_DEPS=("huggingface_hub==2.4.0" "maturin==1.16.0" "nbclient==0.11.0" "nbformat==5.11.1" "ipykernel==7.4.0")
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import huggingface_hub._oidc, nbclient, nbformat, ipykernel" 2>/dev/null || [ ! -x .venv/bin/maturin ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check --no-cache-dir "${PY_TEST_DEPS[@]}"
  fi
  ./scripts/pyref-venv.sh >"$VENV_DIR/pyref-python"
}
VENV_DIR="$(mktemp -d)"
phase "python test venvs (in the background)"
python_venvs >"$VENV_DIR/log" 2>&1 &
VENV_PID=$!
trap 'kill "$VENV_PID" 2>/dev/null; rm -rf "$VENV_DIR"; phase "done"' EXIT

# Clippy lints while the tests compile: clippy-driver is rustc plus the lints, and cargo runs it
# for this crate only (dependencies are built by rustc and their lints capped). One compile
# instead of `cargo clippy` (which checks every dependency again, and again per feature set)
# followed by the test build: the run's largest saving. -D warnings makes any rustc or clippy
# warning an error in every target (lib, bin, tests, benches, with the HEIF decoder); the tests
# that build the crate again (tests/install.rs: maturin, cargo install) inherit both, so the
# default-feature build is linted too. `cargo clippy --all-targets -- -D warnings` is the same
# gate for a quick check by hand.
export RUSTC_WORKSPACE_WRAPPER=clippy-driver RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
phase "build every target, with clippy's lints (--features $HEIF_FEATURE)"
cargo test --no-run --all-targets --locked --features "$HEIF_FEATURE"

if ! wait "$VENV_PID"; then
  cat "$VENV_DIR/log" >&2
  echo "test.sh: installing the Python test environments failed (log above)" >&2
  exit 1
fi
phase "python test venvs ready"
export HFSKY_PYTHON="$PWD/.venv/bin/python"
HFSKY_PYREF_PYTHON="$(cat "$VENV_DIR/pyref-python")"
export HFSKY_PYREF_PYTHON

# Tests that need what this script installed (the wheel, the crate, the notebook) are #[ignore]d
# for a bare `cargo test`; the whole suite here includes them.
[ $# -gt 0 ] || set -- -- --include-ignored

# A fresh keyring folder each run: a keyring left by an earlier run (other password) would be
# locked and answer every request with "prompt dismissed".
KEYRING_HOME="$(mktemp -d)"
trap 'rm -rf "$KEYRING_HOME" "$VENV_DIR"; phase "done"' EXIT
export KEYRING_HOME
phase "cargo test (every test)"
dbus-run-session -- bash -c '
  export XDG_DATA_HOME="$KEYRING_HOME"
  printf "hfsky-test-keyring" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  HFSKY_TEST_SECRET_SERVICE=1 HFSKY_TEST_BROWSER=1 cargo test --locked --features "$HEIF_FEATURE" "$@"
' hfsky-tests "$@"
