"""Hook specifications: the whole plugin API of pingsbench.

A plugin is any module or object with functions decorated by
:data:`bench.hookimpl`.  Built-in samplers and targets use exactly these hooks,
so a third-party package registers the same way (entry-point group
``pingsbench``)::

    from bench import hookimpl

    @hookimpl
    def register_samplers(register):
        register(MySampler())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from bench.contracts import Sampler, Target

PROJECT_NAME = "pingsbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_targets(register: Callable[["Target"], None]) -> None:
    """Register target distributions.

    Args:
        register: Call once per :class:`bench.contracts.Target` instance.
            Names must be unique across all plugins.  Parametrised families
            (``gmm-<d>``) register a :class:`bench.contracts.TargetFamily`
            instead, which resolves names on demand.
    """


@hookspec
def register_samplers(register: Callable[["Sampler"], None]) -> None:
    """Register samplers.

    Args:
        register: Call once per :class:`bench.contracts.Sampler` instance.
            Names must be unique across all plugins.  Parametrised families
            (``ddim-<steps>``) register a :class:`bench.contracts.SamplerFamily`
            instead, which resolves names on demand.
    """
