"""`edgedistill.profile(models, ...)`: teacher, students and artifacts timed side by side.

    report = edgedistill.profile(["photo-restore", "exports/x86-openvino-int8"], threads=2)
    report["x86-openvino-int8"].stats.p50, report.write_markdown("profile.md")

One definition of latency for every runtime (see timing.WHAT_IS_TIMED), measured in interleaved
rounds, here or on a device over SSH (`host="user@device"`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.errors import EdgeDistillError
from edgedistill.profiler.plot import plot_report
from edgedistill.runtime.report import ProfileReport
from edgedistill.runtime.session import ProfileOptions, Quiet, Reporter, run_profile
from edgedistill.runtime.sources import choose_size, is_artifact, resolve, unique_labels
from edgedistill.runtime.stats import DEFAULT_CV_WARN

Models = str | Path | Sequence[str | Path] | Mapping[str, str | Path]


def profile(
    models: Models,
    *,
    target: str | Path | None = None,
    threads: int | None = None,
    host: str | None = None,
    warmup: int = 5,
    warmup_time: float = 0.0,
    iterations: int = 20,
    min_time: float = 3.0,
    max_time: float | None = None,
    layers: int = 10,
    layer_calls: int = 10,
    size: tuple[int, int] | None = None,
    batch: int = 1,
    seed: int = 0,
    inputs: dict[str, np.ndarray] | str | Path | None = None,
    cv_warn: float = DEFAULT_CV_WARN,
    roofline: bool = True,
    ssh_options: Sequence[str] = (),
    identity: str | Path | None = None,
    remote_python: str = "python3",
    ssh_timeout: float | None = None,
    progress: bool = True,
    json_path: str | Path | None = None,
    md_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    reporter: Reporter | None = None,
    kwargs: dict[str, Any] | None = None,
    weights: str | Path | None = None,
) -> ProfileReport:
    """Profile `models` (names/paths, or {label: name/path}); the first is the reference ("teacher").

    Each entry is an artifact directory or model file (.onnx/.ort/.xml/.engine), or a torch model
    (embedded teacher name, run directory, checkpoint). `target` supplies threads, input size and
    the peak ops for % of peak; `host` runs the artifacts on a device over SSH, each step (copying,
    the run there) within `ssh_timeout` seconds (None: remote.DEFAULT_SSH_TIMEOUT). `kwargs` and
    `weights` build the first model when it is `module:Class` or `FAMILY:PATH` (a user's teacher).
    """
    labelled = _labelled(models)
    if not labelled:
        raise EdgeDistillError("give at least one model or artifact to profile")
    _check_counts(warmup, iterations, min_time, batch, threads, layers)
    tgt = None
    if target is not None:
        from edgedistill.core.targets import get_target

        tgt = get_target(target)
    first = {k: v for k, v in (("kwargs", kwargs), ("weights", weights)) if v}
    if first and is_artifact(labelled[0][1]):
        raise EdgeDistillError(
            f"--arg/--weights build the first model, a torch teacher; {labelled[0][1]} is an exported "
            "artifact: put the teacher first or drop them"
        )
    sources = [resolve(path, label, **(first if i == 0 else {})) for i, (label, path) in enumerate(labelled)]
    unique_labels(sources)
    given_inputs = _load_inputs(inputs)
    opts = ProfileOptions(
        threads=threads or (tgt.threads if tgt else None),
        warmup=warmup,
        warmup_time=warmup_time,
        iterations=iterations,
        min_time=min_time,
        max_time=max_time,
        layers=layers,
        layer_calls=layer_calls,
        size=None
        if given_inputs is not None
        else choose_size(sources, size, tgt.input_size if tgt else None),
        batch=batch,
        seed=seed,
        cv_warn=cv_warn,
        roofline=roofline,
        target={"name": tgt.name, "device": tgt.device, "peak_gops": dict(tgt.peak_gops)} if tgt else None,
    )
    ctx: Any = _reporter(progress, reporter)
    with ctx as rep:
        if host is not None:
            from edgedistill.profiler.remote import run_remote

            report = run_remote(
                host, sources, opts, given_inputs, ssh_options, identity, remote_python, rep, ssh_timeout
            )
        else:
            report = run_profile(sources, opts, rep, given_inputs)
    if not report.measured:
        reasons = "; ".join(f"{m.name}: {m.skipped}" for m in report.models if m.skipped)
        raise EdgeDistillError(f"nothing could run here ({reasons})")
    for path, write in (
        (json_path, report.write_json),
        (md_path, report.write_markdown),
        (plot_path, partial(plot_report, report)),
    ):
        if path is not None:
            write(path)
    return report


def _labelled(models: Models) -> list[tuple[str | None, str]]:
    if isinstance(models, str | Path):
        return [(None, str(models))]
    if isinstance(models, Mapping):
        return [(str(k), str(v)) for k, v in models.items()]
    return [(None, str(m)) for m in models]


def _check_counts(
    warmup: int, iterations: int, min_time: float, batch: int, threads: int | None, layers: int
) -> None:
    if warmup < 1:
        raise EdgeDistillError("--warmup must be at least 1 (the first call is reported on its own)")
    if iterations < 1 or min_time < 0:
        raise EdgeDistillError("--iterations must be at least 1 and --min-time not negative")
    if batch < 1 or (threads is not None and threads < 1) or layers < 0:
        raise EdgeDistillError("--batch and --threads must be at least 1, --layers not negative")


def _load_inputs(inputs: dict[str, np.ndarray] | str | Path | None) -> dict[str, np.ndarray] | None:
    """Given inputs: arrays by input name, or an .npz (one array per input) / .npy (the only input)."""
    if inputs is None or isinstance(inputs, dict):
        return inputs
    path = Path(inputs)
    try:
        if path.suffix == ".npy":
            return {path.stem: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise EdgeDistillError(f"--inputs {path}: not a readable .npz/.npy ({exc})") from None


class _NoProgress:
    def __init__(self, reporter: Reporter | None) -> None:
        self._rep = reporter or Quiet()

    def __enter__(self) -> Reporter:
        return self._rep

    def __exit__(self, *exc: object) -> None:
        return None


def _reporter(progress: bool, reporter: Reporter | None) -> Any:
    if reporter is not None or not progress:
        return _NoProgress(reporter)
    from edgedistill.runtime.progress import RichReporter

    return RichReporter()
