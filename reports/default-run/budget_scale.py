"""The default run with every trained model's quick step budget scaled: what a ten-minute cold run would cost.

An experiment behind ``speed.md`` (issue 18, part 4), not a pingsbench option: it scales the optimiser steps
of the quick budgets of every model the default run trains (flow matching, reflow, the denoiser, the
distilled students, ``pings`` and ``pings-pf-distill``) and leaves everything else as it is (batch sizes,
learning rates, pair counts, PINGS's patience), then runs ``pingsbench run`` with the remaining arguments.
The budgets are part of the models' cache keys, so the scaled models never mix with the quick ones.

Usage, from the repository root::

    PINGSBENCH_DISABLE_PLUGINS=pingsbench-example python reports/default-run/budget_scale.py 0.5 \
        --cache-dir EMPTY_DIR --out runs/half-budget --no-progress
"""

from __future__ import annotations

import dataclasses
import sys

from bench.cli import main
from samplers.diffusion.train import EPSNET_BUDGETS
from samplers.distill.train import DISTILL_BUDGETS
from samplers.flow.train import FLOW_MATCHING_BUDGETS, REFLOW_BUDGETS
from samplers.pings.plugin import DISTILL_BUDGETS as PINGS_DISTILL_BUDGETS
from samplers.pings.plugin import PAPER_BUDGETS as PINGS_PAPER_BUDGETS


def scale_quick_steps(factor: float) -> None:
    """Multiply the ``steps`` of every default-run model's quick budget by ``factor``, in place (rounded)."""
    for table in (FLOW_MATCHING_BUDGETS, REFLOW_BUDGETS, EPSNET_BUDGETS, DISTILL_BUDGETS):
        table["quick"] = {**table["quick"], "steps": round(table["quick"]["steps"] * factor)}
    for budgets in (PINGS_PAPER_BUDGETS, PINGS_DISTILL_BUDGETS):
        budgets["quick"] = dataclasses.replace(budgets["quick"], steps=round(budgets["quick"].steps * factor))


if __name__ == "__main__":
    scale_quick_steps(float(sys.argv[1]))
    sys.exit(main(["run", *sys.argv[2:]]))
