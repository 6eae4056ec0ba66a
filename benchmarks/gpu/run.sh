#!/usr/bin/env bash
# The one command of the GPU run (what it runs, how to prepare it and the sizing: benchmarks/gpu/run.py's header).
#   device:  bash benchmarks/gpu/run.sh                                   (carry ["benchmarks/gpu/carry"])
#   here:    PYTHON=.venv/bin/python bash benchmarks/gpu/run.sh --tiny    (the same pipeline, tiny, on the CPU)
# On the device, python3 is the image's (torch with CUDA); the few packages it lacks are carried as wheels and
# installed into /tmp/site, and rankface is imported from src/ (nothing is installed from a network).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
if [ -d benchmarks/gpu/carry/wheels ] && [[ " $* " != *" --tiny "* ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        benchmarks/gpu/carry/wheels/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
exec "$PY" benchmarks/gpu/run.py "$@"
