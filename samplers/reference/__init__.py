"""``target-draws``: exact draws from the target, the noise floor of every metric.

No network, no training: :mod:`.plugin` holds the sampler and its registration.
"""

from .plugin import TargetDraws

__all__ = ["TargetDraws"]
