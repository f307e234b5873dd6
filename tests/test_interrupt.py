"""Ctrl-C during training: the first asks to stop, a second raises at once, unless the stop is saved."""

import os
import signal
import time

import pytest

from edgedistill.distiller.interrupt import stop_on_sigint


def _press() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # the handler runs between bytecodes of this thread


def test_a_second_press_raises_until_the_stop_is_saved_then_changes_nothing():
    with stop_on_sigint() as stop:
        _press()
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):  # mid-step: the trainer saves nothing
            _press()
        stop.settled = True  # the trainer saved the step it stopped after
        _press()  # a late second press, while the process exits: no KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
