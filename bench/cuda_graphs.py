"""``--cuda-graphs``: a sampler's whole timed call captured as one CUDA graph per batch size.

Capture follows torch's recipe (:func:`torch.cuda.graph`): a few calls on a side stream
first (lazy initialisation, cuBLAS workspaces), then one call captured.  The sampling
generator is a CUDA generator registered with the graph
(:meth:`torch.cuda.CUDAGraph.register_generator_state`), so replays draw fresh Philox
numbers, and it is reseeded before every replay, so each replay draws what an eager call
with a freshly seeded generator draws (as :meth:`bench.runner.PairSession.timed_call`
does).  A replay returns the graph's static output tensor, overwritten by the next
replay.  A call that cannot be captured (a host synchronisation such as ``.item()``,
work on the CPU, data-dependent control flow, a CPU generator) raises while capturing;
the runner then times eager calls and records why.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager

import torch
from torch import Tensor

#: Untimed calls on a side stream before the capture (torch's examples use 3).
CAPTURE_WARMUP = 3


def capture(
    sample: Callable[[int, torch.Generator], Tensor],
    n: int,
    seed: int,
    device: torch.device,
    precision: Callable[[], ContextManager[Any]],
) -> Callable[[], Tensor]:
    """Capture ``sample(n, generator)`` as a CUDA graph and return its replay.

    Args:
        sample: The sampling function (a sampler's ``fit`` result, compiled or not).
        n: Samples per call.
        seed: The generator's seed before every call and replay.
        device: A CUDA device.
        precision: The sampling precision context (autocast with its cache off, as capture needs).

    Returns:
        A function of no arguments that reseeds the generator, replays the graph and returns
        the static output, shape ``(n, dim)``.

    Raises:
        Exception: Whatever capturing raises (no CUDA, a call that synchronizes with the host, …).
    """
    generator = torch.Generator(device=device)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(generator)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.inference_mode(), precision():
        for _ in range(CAPTURE_WARMUP):
            generator.manual_seed(seed)
            sample(n, generator)
    torch.cuda.current_stream(device).wait_stream(side)
    generator.manual_seed(seed)
    with torch.inference_mode(), precision(), torch.cuda.graph(graph):
        output = sample(n, generator)

    def replay() -> Tensor:
        generator.manual_seed(seed)
        graph.replay()
        return output

    return replay
