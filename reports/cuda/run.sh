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
# A dry run first stops the script if any model would have to be trained.  Each stage has its own time limit,
# so one that overruns leaves the others' reports (and its finished rows, rendered).  Everything comes back as
# $OUT/cuda-reports.tgz (unpack it in the repository root) and $OUT/run.log; the exit status is 1 if a stage
# failed or was cut off ("== NAME: exit 124" in the log).  At most about 8 minutes: give the call 540 s.
#
# For a check on a CPU (the cuda-graphs stage needs CUDA and is left out; the smoke models are trained into a
# cache of their own; remove reports/cuda/eager and reports/cuda/compile afterwards):
# PYTHON=.venv/bin/python DEVICE=cpu SIZES=1,100 REQUIRE_CACHED=0 \
#     RUN_ARGS="--profile smoke --n 400 --cache-dir /tmp/smoke-cache" OUT=/tmp/out bash reports/cuda/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}  # the GPU machine's, which holds torch
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-1,100,10000,1000000}
COMPILED=${COMPILED:-pings,rectified-flow-1,dpm-solver++-2m-20}
RUN_ARGS=${RUN_ARGS:-}
REQUIRE_CACHED=${REQUIRE_CACHED:-1}  # 0: let the stages train what the cache lacks (the CPU check)
OUT=${OUT:?set OUT to the folder that comes back}
# The built-in samplers and targets alone, whatever plugins that Python has.
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD=1
RUN=("$PYTHON" -m bench.cli run --device "$DEVICE" --targets gmm3d,dho --threads 2 --cache-dir .cuda-cache --no-progress)

FAILED=0

stage() {  # stage NAME SECONDS ARGS...: one run into reports/cuda/NAME, interrupted after SECONDS
    local name=$1 seconds=$2 start=$SECONDS status
    shift 2
    echo "== $name ($(date -u +%H:%M:%S))"
    # shellcheck disable=SC2086  # RUN_ARGS is a list of options
    timeout --signal=INT --kill-after=20 "$seconds" "${RUN[@]}" $RUN_ARGS --out "reports/cuda/$name" "$@"
    status=$?
    echo "== $name: exit $status, $((SECONDS - start)) s"
    if [ "$status" -ne 0 ]; then
        FAILED=1
        # An interrupted run leaves results.json without its leaderboard and figures: render them from it.
        [ -f "reports/cuda/$name/results.json" ] && "$PYTHON" -m bench.cli report "reports/cuda/$name"
    fi
}

main() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || return 1
        export PYTHONPATH=/tmp/site
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi -L 2>/dev/null
    # Every package pingsbench imports at run time, so that a missing one stops here, not in a stage.
    "$PYTHON" -c 'import adjustText, filelock, matplotlib, numpy, platformdirs, pluggy, scipy, sklearn, tabulate, tqdm
import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "device",
                    torch.cuda.get_device_name() if torch.cuda.is_available() else "none")' || return 1
    # The models must all come from the cache: GPU time is for measuring.
    "${RUN[@]}" $RUN_ARGS --batch-sizes "$SIZES" --dry-run | tail -1 | tee /tmp/plan.txt
    if [ "$REQUIRE_CACHED" = 1 ] && ! grep -q "models: 0 to train" /tmp/plan.txt; then
        echo "stopping: the cache lacks models (run reports/cuda/prepare.sh and carry .cuda-cache)"
        return 1
    fi

    mkdir -p reports/cuda
    stage eager 210 --batch-sizes "$SIZES"
    if [ "$DEVICE" != cpu ]; then
        stage cuda-graphs 90 --batch-sizes "$SIZES" --cuda-graphs
    fi
    stage compile 90 --compile --samplers "$COMPILED"
    # shellcheck disable=SC2046  # the stages that ran
    tar czf "$OUT/cuda-reports.tgz" $(ls -d reports/cuda/eager reports/cuda/cuda-graphs reports/cuda/compile 2>/dev/null)
    ls -l "$OUT"
    return $FAILED
}

mkdir -p "$OUT"
main 2>&1 | tee "$OUT/run.log"
