"""pingsbench: a fair, plugin-based benchmark for fast generative samplers."""

from bench.hookspecs import hookimpl

__all__ = ["hookimpl", "__version__"]
__version__ = "0.1.0"
