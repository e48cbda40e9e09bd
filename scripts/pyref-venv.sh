#!/usr/bin/env bash
# The Python reference stack (torch CPU, diffusers, transformers, peft) in .venv-pyref, pinned by
# tests/pyref-requirements.lock.txt and installed --no-deps (leaves out triton/cuda-bindings, which
# only torch.compile needs: ~1 GB less) and without pip's wheel cache (another GB on disk). Used by
# the interop tests (real diffusers loading hfsky's LoRA) and by the benchmarks. Prints the venv's
# python.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${HFSKY_PYREF_VENV:-$PWD/.venv-pyref}"
if ! "$VENV/bin/python" -c "import torch, diffusers, peft, transformers" 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir --no-deps -r tests/pyref-requirements.lock.txt >&2
fi
echo "$VENV/bin/python"
