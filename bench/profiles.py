"""Budget profiles as data.

A profile names a training budget.  Plugins keep their per-profile budgets as
plain tables next to the model they train and select the row with
:meth:`Profile.pick`; no plugin branches on the profile name.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Profile:
    """A named budget.

    Attributes:
        name: ``smoke``, ``quick`` or ``paper``.
        description: One line shown by the CLI and in reports.
        n: Default number of generated (and held-out reference) points per pair.
    """

    name: str
    description: str
    n: int

    def pick(self, table: Mapping[str, T]) -> T:
        """Select this profile's entry of a per-profile budget table.

        Raises:
            KeyError: The table has no entry for this profile (message lists those it has).
        """
        try:
            return table[self.name]
        except KeyError:
            raise KeyError(f"no budget for profile {self.name!r}; table has {sorted(table)}") from None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", "seconds per model; for tests and plumbing checks, not for conclusions", n=2_000),
        Profile(
            "quick", "CPU-friendly budgets; the default: both built-in targets in 14–16 minutes on 2 cores", n=10_000
        ),
        Profile("paper", "the paper's published training budgets (20 000 steps); hours on a CPU", n=10_000),
    )
}
DEFAULT_PROFILE = "quick"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; available: {', '.join(PROFILES)}") from None
