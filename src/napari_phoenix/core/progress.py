"""Progress events of long jobs.

Every long job is a generator of :class:`Progress` events: the scripting API
drains it, the CLI shows a progress bar, the widgets run it in a napari
``thread_worker`` and can stop between two events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One step of a long job: ``done`` of ``total`` finished, what happened, and its result."""

    done: int
    total: int
    message: str
    result: object = None


def drain(events: Iterable[Progress]) -> list:
    """Run a job to the end without showing anything; return the results of its events."""
    return [ev.result for ev in events]
