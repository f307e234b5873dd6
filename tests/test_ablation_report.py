"""The distillation ablation's report (benchmarks/distill_ablation.py): what each recipe element buys.

The Δ columns say how much better the full recipe did than the variant (+ dB, or a lower feature
distance), paired seed by seed (a seed's init and data order are shared, so pairing removes most of
the seed-to-seed spread), settings are kept per teacher
when rows of several `--rows` files are merged, and the markdown shows every variant once.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ablation():
    name = "distill_ablation"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def row(teacher: str, variant: str, seed: int, psnr: float, **extra) -> dict:
    return {
        "teacher": teacher, "variant": variant, "seed": seed, "psnr_vs_teacher": psnr,
        "feature_distance": 10.0 + seed, "feature_distance_teacher": 9.5, "max_channel_shift_pct": 0.5,
        "macs_ratio": 18.57, "steps": 400, "wall_s": 200.0, **extra,
    }  # fmt: skip


def args() -> argparse.Namespace:
    return argparse.Namespace(threads=1, device="cpu", width=0.22, steps=2000, batch=8, cache=384)


def test_deltas_pair_seeds_and_settings_stay_per_teacher(ablation):
    rows = [
        row("photo-restore", "full", 0, 31.0, width=0.22),
        row("photo-restore", "full", 1, 29.0, width=0.22),
        row("photo-restore", "no-gt", 0, 30.0, width=0.22, feature_distance=12.0),
        row("photo-restore", "no-gt", 1, 28.5, width=0.22, feature_distance=12.0),
        row("digits-dcgan", "full", 0, 25.0, width=0.2, steps=1500),
        row("digits-dcgan", "no-inherit", 0, 15.0, width=0.2, steps=1500),
    ]
    report = ablation.summarise(args(), rows)
    by = {(e["teacher"], e["variant"]): e for e in report["summary"]}
    assert by[("photo-restore", "no-gt")]["full_gain_psnr_vs_teacher"] == pytest.approx(0.75)
    # lower is better for the feature distance: the full recipe's 10 and 11 against 12 gain +1.5
    assert by[("photo-restore", "no-gt")]["full_gain_feature_distance"] == pytest.approx(1.5)
    assert by[("photo-restore", "no-gt")]["psnr_vs_teacher_std"] == pytest.approx(1.0607, abs=1e-3)
    assert by[("digits-dcgan", "no-inherit")]["full_gain_psnr_vs_teacher"] == pytest.approx(10.0)
    assert "full_gain_psnr_vs_teacher" not in by[("photo-restore", "full")]
    assert report["settings"]["digits-dcgan"]["width"] == 0.2
    assert report["settings"]["digits-dcgan"]["steps"] == 1500
    assert report["settings"]["photo-restore"]["steps"] == 400

    table = ablation.markdown(report)
    assert table.count("| no-gt |") == 1 and table.count("| no-inherit |") == 1
    assert "+0.75" in table and "+10.00" in table
    assert "**digits-dcgan**: width 0.2" in table


def test_a_variant_without_its_full_seed_gets_no_delta(ablation):
    rows = [row("photo-restore", "full", 0, 31.0), row("photo-restore", "no-gt", 1, 28.0)]
    entry = next(e for e in ablation.summarise(args(), rows)["summary"] if e["variant"] == "no-gt")
    assert "full_gain_psnr_vs_teacher" not in entry
