"""A time budget (`--train-minutes`) turned into a step count: when to fit it, and at what speed."""

from __future__ import annotations

PROBE_STEPS = 20  # steps timed before a time budget fixes the step count
PROBE_WARMUP = 5  # first steps the speed probe leaves out: allocator, cuDNN autotuning, a GPU's clocks
REFIT_UNTIL = 0.6  # refit the step count until this fraction of it: before the learning rate decays


class BudgetFitter:
    """When to fit a time budget's step count, and the speed to fit it with.

    The speed is measured from PROBE_WARMUP steps after the (re)start, so warm-up is not counted;
    the count is fitted at PROBE_STEPS and refitted every tenth of the plan until REFIT_UNTIL of it,
    so a change only moves where the decay begins. One early probe is not enough: it overestimated
    the step time 2x on a GPU shared with two other runs building their caches."""

    def __init__(self, step: int, wall_s: float) -> None:
        self.start_step = step
        self.ref: tuple[int, float] | None = None  # (step, wall) the speed is measured from
        self.next_fit = step + PROBE_STEPS
        self.fits = 0

    def due(self, step: int, wall_s: float, planned: int) -> bool:
        if self.ref is None and step - self.start_step >= PROBE_WARMUP:
            self.ref = (step, wall_s)
        if self.ref is None or step < self.next_fit or (self.fits and step >= REFIT_UNTIL * planned):
            return False
        self.fits += 1
        self.next_fit = step + max(PROBE_STEPS, planned // 10)
        return True

    def seconds_per_step(self, step: int, wall_s: float) -> float:
        assert self.ref is not None
        ref_step, ref_wall = self.ref
        return max(wall_s - ref_wall, 1e-9) / max(step - ref_step, 1)
