#!/usr/bin/env bash
# Builds hfsky with the CUDA backend and cuDNN convolutions (`--features cuda,cudnn`; CUDNN=0 for
# `cuda` alone) on a machine with no GPU and no CUDA install: a pinned CUDA 13.0 toolkit comes from
# PyPI wheels (nvcc, nvvm, crt, runtime, cccl).
#
# The binary starts on any Linux machine, GPU or not: the CUDA libraries (driver, cuBLAS, cuRAND,
# and cuDNN, which is optional: without it convolutions run as im2col + cuBLAS) are opened at run
# time, not linked. candle 0.11 hard-wires link-time binding (cudarc's
# `dynamic-linking`, and `-lcudart` in candle-kernels: huggingface/candle#3900), so this script
# builds against patched copies of those two crates made from the registry sources: cudarc's
# `dynamic-loading` instead, and the CUDA runtime linked statically (libcudart_static, which
# itself opens the driver at run time). The patch lives only in these build flags; Cargo.lock is
# restored afterwards.
#
# One binary per GPU generation: candle's kernels are compiled to PTX for one compute capability
# (`CUDA_COMPUTE_CAP`), which the driver JIT-compiles for that GPU and any newer one; bf16 kernels
# exist only from 8.0 on. So:
#   sm75 → T4 (Colab/Kaggle), RTX 20 (f16 only: hfsky trains in f16 with loss scaling there)
#   sm80 → A100 (8.0), A10 / RTX 30 (8.6), L4 / RTX 40 (8.9) (bf16)
#   sm90 → H100 / H200 (bf16, kernels built for Hopper)
#
#   scripts/build-cuda.sh                 toolkit + one release build per arch in CUDA_ARCHS
#                                         (default "75 80 90") → target-cuda-sm<arch>/release/hfsky
#   CUDA_ARCHS=80 scripts/build-cuda.sh   only that one (each build is ~17 min on 2 cores)
#   CUDA_COMPUTE_CAP=90 scripts/build-cuda.sh   the former single build → target-cuda/release/hfsky
#   scripts/build-cuda.sh --runtime-libs  also fetch the real runtime libraries the binary needs on a
#                                         GPU host without them (cuBLAS and cuDNN are large: ~600 MB each)
#
# Everything downloaded lives in .cuda-toolkit/ (git-ignored); the build goes to target-cuda/.
# The build takes ~17 min on 2 cores, mostly nvcc compiling candle-kernels; run it under
# `nice -n 19` on a shared machine. Why these pins: cudarc 0.19.10 knows CUDA up to 13.0, and
# unpinned wheels resolve to newer toolkits it rejects (shared/reference/candle-notes.md §5).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TOOLS="${HFSKY_CUDA_TOOLS:-$ROOT/.cuda-toolkit}"
TREE="$TOOLS/tree"
CU="$TREE/nvidia/cu13"
WHEELS="$TOOLS/wheels"
if [ -n "${CUDA_COMPUTE_CAP:-}" ]; then
  ARCHS="$CUDA_COMPUTE_CAP"
  SINGLE_TARGET="${CARGO_TARGET_DIR:-$ROOT/target-cuda}"
else
  ARCHS="${CUDA_ARCHS:-75 80 90}"
  SINGLE_TARGET=""
fi
for arch in $ARCHS; do
  case "$arch" in 75|80|86|89|90) ;; *) echo "build-cuda: unsupported compute capability '$arch' (use 75, 80, 86, 89 or 90)" >&2; exit 2 ;; esac
done

TOOLKIT=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)
# The runtime libraries the binary opens on a GPU host (for --runtime-libs); CUDA 13.0 majors.
RUNTIME=(
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cudnn-cu13==9.13.0.50
)
FEATURES=cuda,cudnn
[ "${CUDNN:-1}" = 0 ] && FEATURES=cuda

say() { echo "build-cuda: $*" >&2; }

fetch() { # fetch DEST_DIR SPEC... : download pinned wheels (no deps) and unpack them into DEST_DIR
  local dest="$1"; shift
  mkdir -p "$WHEELS" "$dest"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$WHEELS" "$@"
  for spec in "$@"; do
    local name="${spec%%==*}" version="${spec##*==}"
    local wheel
    wheel=$(ls "$WHEELS"/"${name//-/_}"-"$version"-*.whl)
    python3 -m zipfile -e "$wheel" "$dest"
  done
}

if [ ! -x "$CU/bin/nvcc" ]; then
  say "fetching the CUDA 13.0 toolkit wheels into $TOOLS"
  fetch "$TREE" "${TOOLKIT[@]}"
  chmod +x "$CU"/bin/* "$CU"/nvvm/bin/* 2>/dev/null || true
fi
"$CU/bin/nvcc" --version | tail -2 >&2

# Patched candle-core (cudarc dynamic-loading) and candle-kernels (static CUDA runtime).
REGISTRY_SRC=$(cargo metadata --format-version 1 --features cuda 2>/dev/null \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print("\n".join(p["name"]+" "+p["manifest_path"].rsplit("/",1)[0] for p in m["packages"] if p["name"] in ("candle-core","candle-kernels")))')
PATCHED="$TOOLS/patched"
PATCH_FLAGS=()
while read -r name dir; do
  dest="$PATCHED/$(basename "$dir")"
  if [ ! -f "$dest/.hfsky-patched" ]; then
    rm -rf "$dest" && mkdir -p "$PATCHED" && cp -r "$dir" "$dest"
    case "$name" in
      candle-core)
        grep -q '"dynamic-linking",' "$dest/Cargo.toml" || { say "candle-core: no dynamic-linking feature to replace in $dest/Cargo.toml"; exit 1; }
        sed -i 's/"dynamic-linking",/"dynamic-loading",/' "$dest/Cargo.toml" ;;
      candle-kernels)
        grep -q 'rustc-link-lib=dylib=cudart' "$dest/build.rs" || { say "candle-kernels: no cudart link line in $dest/build.rs"; exit 1; }
        sed -i 's|println!("cargo:rustc-link-lib=dylib=cudart");|println!("cargo:rustc-link-lib=static=cudart_static"); println!("cargo:rustc-link-lib=dylib=dl"); println!("cargo:rustc-link-lib=dylib=rt");|' "$dest/build.rs" ;;
    esac
    touch "$dest/.hfsky-patched"
  fi
  PATCH_FLAGS+=(--config "patch.crates-io.$name.path=\"$dest\"")
done <<<"$REGISTRY_SRC"
cp Cargo.lock "$TOOLS/Cargo.lock.orig"
trap 'cp "$TOOLS/Cargo.lock.orig" Cargo.lock' EXIT

BUILT=()
for arch in $ARCHS; do
  export CUDA_COMPUTE_CAP="$arch"
  export CARGO_TARGET_DIR="${SINGLE_TARGET:-$ROOT/target-cuda-sm$arch}"
  say "building for sm_$arch (CUDA_COMPUTE_CAP=$arch, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  # CUDA_COMPUTE_CAP is also compiled into the binary (`hfsky env` reports it).
  PATH="$CU/bin:$PATH" CUDA_HOME="$CU" CUDA_PATH="$CU" CUDA_ROOT="$CU" \
    RUSTFLAGS="${RUSTFLAGS:-} -L native=$CU/lib" \
    cargo build --release --features "$FEATURES" --bin hfsky "${PATCH_FLAGS[@]}"
  BUILT+=("$CARGO_TARGET_DIR/release/hfsky")
  say "built $CARGO_TARGET_DIR/release/hfsky ($(du -h "$CARGO_TARGET_DIR/release/hfsky" | cut -f1))"
done

BIN="${BUILT[0]}"
NEEDED=$(readelf -d "$BIN" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p' | grep -E 'cuda|cublas|curand|nvrtc|cudart|cudnn' || true)
if [ -n "$NEEDED" ]; then
  say "the binary links CUDA libraries at load time (NEEDED: $(echo $NEEDED)); it would not start without them"
  exit 1
fi
say "no CUDA library is linked at load time; on a GPU host the binary opens libcuda.so.1 (the driver),"
say "  libcublas.so.13 and libcurand.so.10, and libcudnn.so.9 where it is there (a CUDA 13 runtime, or PyPI"
say "  wheels: ${RUNTIME[*]}); features: $FEATURES"

if [ "${1:-}" = "--runtime-libs" ]; then
  LIBS="$TOOLS/runtime-lib"
  say "fetching the runtime libraries into $LIBS"
  fetch "$TOOLS/runtime-tree" "${RUNTIME[@]}"
  mkdir -p "$LIBS"
  find "$TOOLS/runtime-tree" "$CU/lib" -name '*.so.*' \( -name 'libcublas*' -o -name 'libcurand*' -o -name 'libnvrtc*' -o -name 'libcudart*' -o -name 'libcudnn*' \) -exec cp -L {} "$LIBS/" \;
  say "run with: LD_LIBRARY_PATH=$LIBS <binary> generate --dtype f16 …   (binaries: ${BUILT[*]})"
fi
