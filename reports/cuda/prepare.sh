#!/usr/bin/env bash
# On the CPU machine, before reports/cuda/run.sh: the default run's models in .cuda-cache/ and the wheels the GPU
# machine's Python 3.12 lacks (platformdirs, adjustText) in .whl/; carry both to the GPU machine.
#
# The models come from a default run on this CPU at 2 threads into runs/cuda-prepare/ (options after the script's
# name are passed on): it trains what .cuda-cache lacks, about 12 minutes of training from nothing on 2 cores.
# To reuse a cache folder of earlier runs (its models and metric values), `cp -r WARM/. .cuda-cache/` first:
# then it takes 1-3 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}

PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD=1 "$PYTHON" -m bench.cli run --targets gmm3d,dho --threads 2 --cache-dir .cuda-cache \
    --no-progress --out runs/cuda-prepare "$@"
versions=$("$PYTHON" -c 'import importlib.metadata as m; print(*(f"{name}=={m.version(name)}" for name in ("platformdirs", "adjustText")))')
# shellcheck disable=SC2086  # two requirements
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl $versions
ls -l .whl .cuda-cache
