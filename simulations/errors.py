"""Errors of the simulator (DESIGN.md section 9).

All are *local* errors: a simulation that deadlocks, runs past its time limit or is
set up inconsistently is a bug in the scenario, not something a peer did.
"""

from __future__ import annotations

from stack.base.errors import LocalError

__all__ = ["SimulationError", "DeadlockError", "TimeLimitError"]


class SimulationError(LocalError):
    """Root of the simulator's errors (bad setup: unknown host, port taken, ...)."""


class DeadlockError(SimulationError):
    """The virtual loop has nothing ready and nothing scheduled, yet work is waiting."""


class TimeLimitError(SimulationError):
    """Virtual time would pass the ``max_time`` given to ``run_virtual``."""
