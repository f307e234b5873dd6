"""`distill` for a classifier teacher: data-free (DAFL/DFAD through a generator) or KD with --data.

The `distill` verb hands over here when the teacher's spec kind is `classifier` or --data-free is
given, so one command compares the two: `distill digits-classifier` vs `... --data digits`.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from edgedistill.cli.console import console, human
from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import GeneratorSpec

GENERATOR_DEFAULT_WIDTH = (
    0.25  # the verb's --width default (a generator's); a classifier then uses its family's
)


def teacher_kind(teacher: str) -> str | None:
    """The spec kind of an embedded teacher or a run directory, read without loading weights."""
    from edgedistill.models.embedded import embedded_teachers

    known = embedded_teachers().get(teacher)
    if known is not None:
        return known.spec.kind
    spec_file = Path(teacher) / "model.json"
    return GeneratorSpec.load(spec_file).kind if spec_file.is_file() else None


def wants_classifier(teacher: str, data_free: bool) -> bool:
    kind = teacher_kind(teacher)
    if data_free and kind not in (None, "classifier"):
        raise EdgeDistillError(
            f"--data-free is for classifier teachers; {teacher} is a {kind} generator: leave --data-free out"
        )
    return data_free or kind == "classifier"


def distill_classifier_verb(
    teacher: str,
    out: Path,
    *,
    data_free: bool,
    method: str,
    bn_weight: float | None,
    data: Path | None,
    steps: int | None,
    width: float,
    seed: int,
    threads: int | None,
    resume: bool,
) -> Path:
    from edgedistill.datafree.api import distill_classifier

    if data_free and data is not None:
        raise EdgeDistillError(
            "--data-free and --data contradict each other: drop one (with --data: KD on real data)"
        )
    run = distill_classifier(
        teacher,
        out,
        method=method,
        data=data,
        steps=steps,
        width=None if width == GENERATOR_DEFAULT_WIDTH else width,
        bn_weight=bn_weight,
        seed=seed,
        threads=threads,
        resume=resume,
    )
    table = Table(title=f"student classifier in {run.run_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in run.metrics.items():
        big = isinstance(value, int) and key.endswith(("_macs", "_params"))
        table.add_row(key, human(value) if big else str(value))
    console.print(table)
    return run.run_dir
