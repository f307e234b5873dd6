"""A search's measuring sessions read as one time per model (search/readings.py, refine.Sessions)."""

from __future__ import annotations

import math

import pytest

from edgedistill.search import refine
from edgedistill.search import space as sp
from edgedistill.search.readings import Readings
from edgedistill.search.result import Candidate


def test_one_session_reads_as_it_was_timed():
    readings = Readings()
    readings.add({"a": 12.5, "b": 20.0})
    assert readings.ms() == pytest.approx({"a": 12.5, "b": 20.0})
    assert readings.factors() == pytest.approx([1.0])


def test_a_session_that_read_slow_is_met_halfway_through_the_models_it_shares():
    """Session 2 read everything 1.3x: neither anchor can be told right, so both set the level, and a
    model timed only in session 2 is read at that level too, as if timed beside the others."""
    readings = Readings()
    readings.add({"a": 10.0, "b": 20.0})
    readings.add({"a": 13.0, "b": 26.0, "new": 13.0})
    ms = readings.ms()
    half = math.sqrt(1.3)
    assert ms["a"] == pytest.approx(10.0 * half) and ms["b"] == pytest.approx(20.0 * half)
    assert ms["new"] == pytest.approx(ms["a"])  # it ran as fast as "a" in the session they shared
    assert readings.factors() == pytest.approx([1 / half, half])


def test_each_model_is_read_from_all_its_sessions_and_its_own_noise_averages():
    """Sessions that agree on most models keep factors ~1; a model read 10 and 11 reads ~10.49."""
    readings = Readings()
    readings.add({"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0})
    readings.add({"a": 11.0, "b": 20.0, "c": 30.0, "d": 40.0})
    ms = readings.ms()
    assert 10.0 < ms["a"] < 11.0
    assert ms["b"] == pytest.approx(20.0, rel=0.03) and ms["d"] == pytest.approx(40.0, rel=0.03)
    assert all(f == pytest.approx(1.0, abs=0.03) for f in readings.factors())


def test_sessions_that_share_no_model_keep_their_own_readings():
    readings = Readings()
    readings.add({"a": 10.0})
    readings.add({"b": 30.0})
    assert readings.ms() == pytest.approx({"a": 10.0, "b": 30.0})
    assert readings.factors() == pytest.approx([1.0, 1.0])


def test_search_sessions_read_a_width_timed_beside_the_baseline_through_it():
    """refine.Sessions as the search uses it: the finalists, then the next width up beside the
    baseline in a session that read 1.3x slow. Timed alone, the next width would read 30 % slow; read
    through the baseline, both read at the level both sessions agree on, their ratio as measured."""
    arch = {
        "a": {"widths": [8, 8, 8, 8, 8]},
        "b": {"widths": [16, 16, 16, 16, 16]},
        "c": {"widths": [8, 8, 8, 8, 4]},
    }
    true_ms = {"a": 10.0, "b": 14.0, "c": 9.0}
    cands = {k: Candidate(a, 0) for k, a in arch.items()}
    names = {sp.arch_key(a): k for k, a in arch.items()}
    speeds = iter([1.0, 1.3])

    def measure(models: list[str]) -> list[float]:
        speed = next(speeds)
        return [speed * true_ms[names[m]] for m in models]

    sessions = refine.Sessions(measure, spec=None, build=lambda spec, a: sp.arch_key(a))
    sessions([cands["a"], cands["c"]])
    assert cands["a"].measured_ms == pytest.approx(10.0) and cands["c"].measured_ms == pytest.approx(9.0)
    sessions([cands["b"], cands["a"]])
    level = math.sqrt(1.3)
    assert cands["b"].measured_ms == pytest.approx(14.0 * level)
    assert cands["a"].measured_ms == pytest.approx(10.0 * level)
    assert cands["c"].measured_ms == pytest.approx(9.0 * level)  # re-read: its session's factor moved
    assert cands["b"].measured_ms / cands["a"].measured_ms == pytest.approx(1.4)
