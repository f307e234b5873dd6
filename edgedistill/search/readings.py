"""Whole-model times from a search's measuring sessions, read as one time per model.

The search times its finalists whole in one session, times them again beside the re-anchored
candidates in a second, and a uniform width beside the baseline in a third; each session is read
at the machine's typical speed through its own time of the speed anchor (whole_timing.measure_models).
One anchor time is one sample of a noisy minute. In one OpenVINO search on a Zen3 the anchor read
the second session 1.44x slower than the first while the five students timed in both ran 1.18-1.35x
slower (median 1.23): read at the typical speed session by session, they came out 0.82-0.94x their
first times in the second, and the choice hung on which session had timed them last.

A model timed in two sessions ties their speeds together. So each model's time is fitted as
log(reading) = log(model's time) + log(session's factor), least squares over every reading, each
group of sessions joined by shared models keeping the mean of its factors at 1: the anchors of all
its sessions set the level together, and every model is read from all its sessions at once.
Readings that agree (one session, or sessions whose anchors were right) come back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SWEEPS = 200  # alternating least squares: sessions x models is tiny, and it converges in a few dozen


@dataclass
class Readings:
    """Every session's readings (model key -> ms), in the order they were taken."""

    sessions: list[dict[str, float]] = field(default_factory=list)

    def add(self, times: dict[str, float]) -> None:
        """One measuring session's times, read at its own anchor's typical speed."""
        self.sessions.append({k: float(v) for k, v in times.items() if v > 0})

    def ms(self) -> dict[str, float]:
        """Each model's time, read from every session that timed it (see the module docstring)."""
        model, _ = self._fit()
        return {k: math.exp(v) for k, v in model.items()}

    def factors(self) -> list[float]:
        """How far each session read off the others (1.0: in line with them; > 1: it read slow)."""
        _, session = self._fit()
        return [math.exp(f) for f in session]

    def _fit(self) -> tuple[dict[str, float], list[float]]:
        logs = [{k: math.log(v) for k, v in s.items()} for s in self.sessions]
        session = [0.0] * len(logs)
        model: dict[str, float] = {}
        for _ in range(SWEEPS):
            sums: dict[str, list[float]] = {}
            for s, times in enumerate(logs):
                for k, y in times.items():
                    sums.setdefault(k, []).append(y - session[s])
            model = {k: sum(v) / len(v) for k, v in sums.items()}
            session = [sum(y - model[k] for k, y in t.items()) / len(t) if t else 0.0 for t in logs]
        for group in _joined(logs):  # y = model + session holds when one shifts by what the other loses
            shift = sum(session[s] for s in group) / len(group)
            for s in group:
                session[s] -= shift
            for k in {k for s in group for k in logs[s]}:
                model[k] += shift
        return model, session


def _joined(sessions: list[dict[str, float]]) -> list[list[int]]:
    """The sessions in groups joined by the models they share (a session alone is its own group)."""
    parent = list(range(len(sessions)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for s, times in enumerate(sessions):
        for k in times:
            parent[root(s)] = root(first.setdefault(k, s))
    groups: dict[int, list[int]] = {}
    for s in range(len(sessions)):
        groups.setdefault(root(s), []).append(s)
    return list(groups.values())
