"""Where a run's pairs execute: in this process (``local``, the default) or as Ray tasks (``ray``).

Every executor produces rows through :func:`bench.runner.pair_row` and hands them to
a :class:`bench.runner.ResultsWriter`, so the document, its summary and the progress
display are the same whichever runs the pairs.
"""

from __future__ import annotations

from typing import Any

from bench.errors import UsageError

EXECUTORS = ("local", "ray")


def make_executor(
    name: str,
    *,
    ray_address: str | None = None,
    cpus_per_task: float | None = None,
    gpus_per_task: float | None = None,
) -> Any:
    """The executor called ``name`` with its options, checked before any work.

    Args:
        name: ``"local"`` or ``"ray"``.
        ray_address: Ray only: ``None`` starts a local Ray instance, ``"auto"`` or ``host:port``
            joins a running cluster.
        cpus_per_task: Ray only: CPUs Ray reserves per task (> 0; default: the run's threads).
        gpus_per_task: Ray only: GPUs Ray reserves per task (≥ 0; default: 1 on a CUDA device, else 0).

    Returns:
        A :class:`bench.executors.local.LocalExecutor` or :class:`bench.executors.ray.RayExecutor`.

    Raises:
        UsageError: An unknown executor, a Ray option given to the local executor, a resource count
            out of range, or ``ray`` without Ray installed.
    """
    if name not in EXECUTORS:
        raise UsageError(f"--executor {name!r} is not an executor; choose one of {', '.join(EXECUTORS)}")
    ray_options = {"--ray-address": ray_address, "--cpus-per-task": cpus_per_task, "--gpus-per-task": gpus_per_task}
    if name == "local":
        given = [option for option, value in ray_options.items() if value is not None]
        if given:
            raise UsageError(f"{given[0]} is an option of --executor ray; add --executor ray or leave {given[0]} out")
        from bench.executors.local import LocalExecutor

        return LocalExecutor()
    if cpus_per_task is not None and not cpus_per_task > 0:
        raise UsageError(f"--cpus-per-task {cpus_per_task:g} is not positive; give the CPUs each task needs, > 0")
    if gpus_per_task is not None and not gpus_per_task >= 0:
        raise UsageError(f"--gpus-per-task {gpus_per_task:g} is negative; give the GPUs each task needs, ≥ 0")
    if ray_address == "":
        raise UsageError("--ray-address is empty; give 'auto', host:port of a running cluster, or leave it out "
                         "to start a local Ray instance")
    from bench.executors.ray import RayExecutor, import_ray

    import_ray()
    return RayExecutor(address=ray_address, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
