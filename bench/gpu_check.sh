#!/usr/bin/env bash
# OmniTalk's GPU check in one command, for a GPU machine that may have no internet:
#
#   bash bench/gpu_check.sh [arguments of `python -m engine gpu-check`]
#
# 1. Python packages the engine needs but the machine's Python lacks are installed from the wheels
#    in .whl/ (git-ignored; bench/README.md says how to fill it) into a private folder put on
#    PYTHONPATH; nothing else is touched, and the machine's own CUDA build of torch is used.
# 2. `python -m engine gpu-check` runs every check within its time budget (default 420 s) and
#    appends a dated section to bench/RESULTS.md.
# OUT=DIR also keeps the log and a JSON file with every detail there. PYTHON picks the interpreter.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${OMNITALK_WHEELS:-.whl}
SITE=${OMNITALK_GPU_SITE:-/tmp/omnitalk-gpu-site}
LIMIT_S=${GPU_CHECK_TIMEOUT_S:-470}

# import name -> distribution, for everything `python -m engine gpu-check` imports.
missing=$("$PY" - <<'PY'
import importlib.util
needed = {
    "torch": "torch", "numpy": "numpy", "transformers": "transformers", "tokenizers": "tokenizers",
    "safetensors": "safetensors", "huggingface_hub": "huggingface_hub", "bitsandbytes": "bitsandbytes",
    "onnxruntime": "onnxruntime_gpu", "onnx": "onnx", "onnxscript": "onnxscript", "soundfile": "soundfile",
    "cffi": "cffi", "soxr": "soxr", "platformdirs": "platformdirs", "pynvml": "nvidia_ml_py",
    "silero_vad": "silero_vad",
}
print(" ".join(dist for module, dist in needed.items() if importlib.util.find_spec(module) is None))
PY
)
if [ -n "$missing" ]; then
    echo "[gpu_check.sh] missing here: $missing" >&2
    wheels=()
    for dist in $missing; do
        found=$(ls "$WHEELS"/*.whl 2>/dev/null | while read -r f; do
            name=$(basename "$f" | cut -d- -f1 | tr 'A-Z.-' 'a-z__')
            [ "$name" = "$dist" ] && echo "$f"
        done | head -n 1)
        if [ -n "$found" ]; then
            wheels+=("$found")
        else
            echo "[gpu_check.sh] no wheel for $dist in $WHEELS/ (see bench/README.md); checks that need it will fail" >&2
        fi
    done
    if [ ${#wheels[@]} -gt 0 ]; then
        mkdir -p "$SITE"
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}" || exit 3
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ -z "${OUT:-}" ]; then
    exec timeout "$LIMIT_S" "$PY" -m engine gpu-check "$@"
fi
mkdir -p "$OUT"
timeout "$LIMIT_S" "$PY" -m engine gpu-check --json "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
