"""Progress while profiling: a rich bar here, JSON lines on stderr on a device.

The rich bar never refreshes on its own (auto_refresh off): a refresh thread would compete with
the timed calls for the CPU and the GIL. It is redrawn between rounds, a few times a second.
"""

from __future__ import annotations

import json
import sys
from types import TracebackType
from typing import Any

PROGRESS_MARK = "@@edgedistill-progress "


class RichReporter:
    """A transient rich progress bar on stderr (a context manager)."""

    def __init__(self, title: str = "profiling") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            auto_refresh=False,
            transient=True,
        )
        self._task = self._progress.add_task(title, total=None)

    def __enter__(self) -> RichReporter:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def stage(self, text: str) -> None:
        from rich.markup import escape

        self._progress.update(self._task, description=escape(text), total=None, completed=0)
        self._progress.refresh()

    def rounds(self, done: int, total: int) -> None:
        self._progress.update(self._task, total=max(total, done), completed=done)
        self._progress.refresh()


class StderrReporter:
    """What remote_main emits: one JSON line per event, which the local side turns into its bar."""

    def stage(self, text: str) -> None:
        self._emit({"stage": text})

    def rounds(self, done: int, total: int) -> None:
        self._emit({"done": done, "total": total})

    @staticmethod
    def _emit(event: dict[str, Any]) -> None:
        sys.stderr.write(PROGRESS_MARK + json.dumps(event) + "\n")
        sys.stderr.flush()


def relay(line: str, reporter: Any) -> bool:
    """Feed a remote progress line to `reporter`; False when the line is not one."""
    if not line.startswith(PROGRESS_MARK):
        return False
    try:
        event = json.loads(line[len(PROGRESS_MARK) :])
    except json.JSONDecodeError:
        return False
    if "stage" in event:
        reporter.stage(f"[remote] {event['stage']}")
    elif "done" in event:
        reporter.rounds(int(event["done"]), int(event["total"]))
    return True
