"""Ctrl-C during long work: the first asks the loop to stop after its current step (which then saves),
a second raises KeyboardInterrupt at once. Shared by the distiller, QAT and data-free trainers."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import threading
from collections.abc import Iterator


class StopRequest(threading.Event):
    """Set by the first Ctrl-C. The loop marks it `settled` once it has stopped between two steps: the
    save that follows is then let finish, and a second press (two quick presses, the second landing
    while the stopped run saves or exits) changes nothing. Raising inside that save left a whole
    checkpoint of the stopped step behind an error saying the step was not saved (seen in CI)."""

    settled = False


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[StopRequest]:
    """First Ctrl-C asks the loop to stop after the current step; a second one raises
    KeyboardInterrupt wherever the step is, and the trainer then saves nothing."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            if stop.settled:
                return
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with _no_alternate_signal_stack():
            yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def _no_alternate_signal_stack() -> Iterator[None]:
    """Python delivers its signals on the thread's alternate stack when there is one (SA_ONSTACK).
    OpenVINO's CPU plugin leaves one on a thread that compiled a model, and a Ctrl-C delivered on it
    later segfaulted the process (seen after NNCF calibration in the same process). While training
    waits for Ctrl-C, the main thread has none; the previous one is put back after."""
    if sys.platform != "linux":
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    old = _StackT()
    if libc.sigaltstack(None, ctypes.byref(old)) != 0 or old.ss_flags & 2:  # 2: SS_DISABLE, none set
        yield
        return
    off = _StackT(None, 2, 0)
    libc.sigaltstack(ctypes.byref(off), None)
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(old), None)
