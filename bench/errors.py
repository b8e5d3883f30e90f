"""The errors pingsbench reports to a user, with one format and one exit status.

Everything a user can get wrong — an option, a sampler or target name, an
output folder, a results file, a broken or conflicting plugin — is raised as a
:class:`UsageError` *before any model is built*.  The CLI prints it as one line
(``error: <what was wrong>; <what is allowed or what to do>``) and exits with
status 2; ``-v`` adds the traceback.  The Python API raises the same
exceptions, so scripts get the same messages.
"""

from __future__ import annotations

from typing import Sequence

#: Exit status of the CLI for a :class:`UsageError`.
EXIT_USAGE = 2


class PingsbenchError(Exception):
    """Base class of every error pingsbench raises on purpose."""


class UsageError(PingsbenchError, ValueError):
    """Bad input, refused before any work: printed as one line, exit status 2.

    The message says what was wrong and what is allowed (or what to do), in one line.
    """


class PluginError(UsageError):
    """A plugin that cannot be used: it failed to load, conflicts with another, or breaks a contract.

    Args:
        message: One line naming the distribution(s) involved and the remedy.
        distributions: The distributions involved (for ``PINGSBENCH_DISABLE_PLUGINS``).
    """

    def __init__(self, message: str, distributions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.distributions = tuple(distributions)
