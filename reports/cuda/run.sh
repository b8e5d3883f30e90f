#!/usr/bin/env bash
# The CUDA report (issue 18, part 5), run on a lent GPU machine in a copy of this repository.
#
# Before: on the CPU machine, `bash reports/cuda/prepare.sh` trains (or copies) every model of the default run
# into .cuda-cache/ and downloads the wheels the GPU machine lacks into .whl/; carry both.  Nothing is trained
# here: a model's cache identity holds no device, so the CPU-trained models load on CUDA (`--threads 2`, the
# thread count they were trained with, is part of that identity; on CUDA it only sets the metrics' CPU threads).
#
# Three runs of the default (built-in) samplers on gmm3d and dho at n = 10⁴, TF32 off (every run turns it off):
#   eager/        timed eagerly, at batch sizes $SIZES (the scaling figure);
#   cuda-graphs/  the same with --cuda-graphs (each sampler's call captured per batch size);
#   compile/      --compile for $COMPILED, at n only.
# Each stage has its own time limit, so one that overruns leaves the others' reports.  Everything comes back
# as $OUT/cuda-reports.tgz (unpack it in the repository root) and $OUT/run.log.
#
# For a check on a CPU: PYTHON=.venv/bin/python DEVICE=cpu RUN_ARGS="--profile smoke --n 400" OUT=/tmp/out bash reports/cuda/run.sh
# (the cuda-graphs stage needs CUDA and is left out).
set -uo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}  # the GPU machine's, which holds torch
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-1,100,10000,1000000}
COMPILED=${COMPILED:-pings,rectified-flow-1,dpm-solver++-2m-20}
RUN_ARGS=${RUN_ARGS:-}
OUT=${OUT:?set OUT to the folder that comes back}
# The built-in samplers and targets alone, whatever plugins that Python has.
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD=1
RUN=("$PYTHON" -m bench.cli run --device "$DEVICE" --targets gmm3d,dho --threads 2 --cache-dir .cuda-cache --no-progress)

stage() {  # stage NAME SECONDS ARGS...: one run into reports/cuda/NAME, interrupted after SECONDS
    local name=$1 seconds=$2 start=$SECONDS
    shift 2
    echo "== $name ($(date -u +%H:%M:%S))"
    # shellcheck disable=SC2086  # RUN_ARGS is a list of options
    timeout --signal=INT --kill-after=20 "$seconds" "${RUN[@]}" $RUN_ARGS --out "reports/cuda/$name" "$@"
    echo "== $name: exit $?, $((SECONDS - start)) s"
}

main() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || return 1
        export PYTHONPATH=/tmp/site
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi -L 2>/dev/null
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "device",
                torch.cuda.get_device_name() if torch.cuda.is_available() else "none")' || return 1

    mkdir -p reports/cuda
    stage eager 170 --batch-sizes "$SIZES"
    if [ "$DEVICE" != cpu ]; then
        stage cuda-graphs 110 --batch-sizes "$SIZES" --cuda-graphs
    fi
    stage compile 100 --compile --samplers "$COMPILED"
    # shellcheck disable=SC2046  # the stages that ran
    tar czf "$OUT/cuda-reports.tgz" $(ls -d reports/cuda/eager reports/cuda/cuda-graphs reports/cuda/compile 2>/dev/null)
    ls -l "$OUT"
}

main 2>&1 | tee "$OUT/run.log"
