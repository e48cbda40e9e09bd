#!/usr/bin/env bash
# Builds hfsky with the CUDA backend (`--features cuda`) on a machine with no GPU and no CUDA
# install: a pinned CUDA 13.0 toolkit comes from PyPI wheels (nvcc, nvvm, crt, runtime, cccl),
# and the GPU libraries cudarc links against (driver, cuBLAS, cuBLASLt, cuRAND, NVRTC) are
# replaced by stub .so files with the real sonames.
#
# One binary per GPU generation: candle's kernels are compiled to PTX for one compute capability
# (`CUDA_COMPUTE_CAP`), which the driver JIT-compiles for that GPU and any newer one; bf16 kernels
# exist only from 8.0 on. So:
#   sm75 → T4 (Colab/Kaggle), RTX 20 (f16 only: hfsky trains in f16 with loss scaling there)
#   sm80 → A100 (8.0), A10 / RTX 30 (8.6), L4 / RTX 40 (8.9) (bf16)
#   sm90 → H100 / H200 (bf16, kernels built for Hopper)
#
#   scripts/build-cuda.sh                 toolkit + stubs + one release build per arch in CUDA_ARCHS
#                                         (default "75 80 90") → target-cuda-sm<arch>/release/hfsky
#   CUDA_ARCHS=80 scripts/build-cuda.sh   only that one (each build is ~17 min on 2 cores)
#   CUDA_COMPUTE_CAP=90 scripts/build-cuda.sh   the former single build → target-cuda/release/hfsky
#   scripts/build-cuda.sh --runtime-libs  also fetch the real runtime libraries the binary needs on a
#                                         GPU host without them (cuBLAS is large: ~600 MB)
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
STUBS="$TOOLS/stubs"
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
# The real libraries behind the stubs (for --runtime-libs); same CUDA 13.0 major versions.
RUNTIME=(
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)

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

# Stubs: one C function per symbol cudarc declares for each library, built with the real soname,
# so the binary records e.g. NEEDED libcublas.so.13 and resolves the real one on the GPU host.
CUDARC=$(cargo metadata --format-version 1 --features cuda 2>/dev/null \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')
mkdir -p "$STUBS"
stub() { # stub LINKNAME SONAME CUDARC_SYS_DIR
  local link="$1" soname="$2" sys="$3"
  grep -hoE '^\s+fn [A-Za-z0-9_]+\(' "$CUDARC/src/$sys/sys/mod.rs" | sed -E 's/^\s+fn ([A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u >"$STUBS/$link.c"
  gcc -shared -fPIC -Wl,-soname,"$soname" -o "$STUBS/lib$link.so" "$STUBS/$link.c"
}
stub cuda libcuda.so.1 driver
stub cublas libcublas.so.13 cublas
stub cublasLt libcublasLt.so.13 cublaslt
stub curand libcurand.so.10 curand
stub nvrtc libnvrtc.so.13 nvrtc
# candle-kernels links the CUDA runtime itself; link against the real one from the wheel.
ln -sf "$CU/lib/libcudart.so.13" "$STUBS/libcudart.so"

BUILT=()
for arch in $ARCHS; do
  export CUDA_COMPUTE_CAP="$arch"
  export CARGO_TARGET_DIR="${SINGLE_TARGET:-$ROOT/target-cuda-sm$arch}"
  say "building for sm_$arch (CUDA_COMPUTE_CAP=$arch, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  # CUDA_COMPUTE_CAP is also compiled into the binary (`hfsky env` reports it).
  PATH="$CU/bin:$PATH" CUDA_HOME="$CU" CUDA_PATH="$CU" CUDA_ROOT="$CU" \
    RUSTFLAGS="${RUSTFLAGS:-} -L native=$STUBS -L native=$CU/lib" \
    cargo build --release --features cuda --bin hfsky
  BUILT+=("$CARGO_TARGET_DIR/release/hfsky")
  say "built $CARGO_TARGET_DIR/release/hfsky ($(du -h "$CARGO_TARGET_DIR/release/hfsky" | cut -f1))"
done

BIN="${BUILT[0]}"
NEEDED=$(readelf -d "$BIN" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p' | grep -E 'cuda|cublas|curand|nvrtc|cudart|cudnn' || true)
say "CUDA libraries the binary needs at run time (NEEDED): $(echo $NEEDED)"
say "  libcuda.so.1 comes with the NVIDIA driver; the others from a CUDA 13 runtime or PyPI wheels:"
say "  ${RUNTIME[*]} nvidia-cuda-runtime==13.0.96"

if [ "${1:-}" = "--runtime-libs" ]; then
  LIBS="$TOOLS/runtime-lib"
  say "fetching the runtime libraries into $LIBS"
  fetch "$TOOLS/runtime-tree" "${RUNTIME[@]}"
  mkdir -p "$LIBS"
  find "$TOOLS/runtime-tree" "$CU/lib" -name '*.so.*' \( -name 'libcublas*' -o -name 'libcurand*' -o -name 'libnvrtc*' -o -name 'libcudart*' \) -exec cp -L {} "$LIBS/" \;
  say "run with: LD_LIBRARY_PATH=$LIBS <binary> generate --dtype f16 …   (binaries: ${BUILT[*]})"
fi
