"""ONNX Runtime's quantization tools, muted in the calling thread only.

They print() progress and log a warning per call, dozens per export: a user's terminal should show
edgedistill's progress bar and its own lines, not them. Muting globally would swallow what other
threads (a profiler, the user's app) print or log meanwhile, so only the calling thread is muted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Mute ORT's quantization tools in this thread: they print() progress and log a warning per
    call. Nothing else is touched: other loggers, other threads' records and their stdout pass."""
    _QUIETER.enter()
    try:
        yield
    finally:
        _QUIETER.exit()


class _Quieter:
    """The shared state of quiet(): set up when the first thread enters, undone when the last leaves.

    ORT talks three ways: its own loggers (raised to ERROR), the root logger's module functions
    (`logging.warning(...)`, dropped by a filter on the root logger for records that come from
    ORT's files in a quiet thread) and print() (a sys.stdout that drops a quiet thread's writes)."""

    LOGGERS = ("onnxruntime.quantization", "onnxruntime.tools")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth: dict[int, int] = {}  # thread id -> how deep in quiet() it is
        self._levels: dict[str, int] = {}
        self._stdout: _MutedForThreads | None = None
        self._ort_dir = ""

    def enter(self) -> None:
        with self._lock:
            if not self._depth:
                self._setup()
            me = threading.get_ident()
            self._depth[me] = self._depth.get(me, 0) + 1

    def exit(self) -> None:
        with self._lock:
            me = threading.get_ident()
            self._depth[me] -= 1
            if not self._depth[me]:
                del self._depth[me]
            if not self._depth:
                self._teardown()

    def filter(self, record: logging.LogRecord) -> bool:
        """False for ORT's own sub-error records from a quiet thread (a logging.Filter callable)."""
        return not (
            record.thread in self._depth
            and record.levelno < logging.ERROR
            and record.pathname.startswith(self._ort_dir)
        )

    def muted(self) -> bool:
        return threading.get_ident() in self._depth

    def _setup(self) -> None:
        import onnxruntime

        self._ort_dir = os.path.dirname(onnxruntime.__file__) + os.sep
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.ERROR)
        logging.getLogger().addFilter(self.filter)
        self._stdout = _MutedForThreads(sys.stdout, self)
        sys.stdout = self._stdout

    def _teardown(self) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._levels.clear()
        logging.getLogger().removeFilter(self.filter)
        if self._stdout is not None and sys.stdout is self._stdout:  # leave a later replacement be
            sys.stdout = self._stdout.target
        self._stdout = None


class _MutedForThreads:
    """Stands in for sys.stdout: drops what quiet threads write, passes everyone else's through."""

    def __init__(self, target: Any, quieter: _Quieter) -> None:
        self.target = target
        self._quieter = quieter

    def write(self, text: str) -> int:
        return len(text) if self._quieter.muted() else self.target.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._quieter.muted():
            self.target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ... of the real stream
        return getattr(self.target, name)


_QUIETER = _Quieter()
