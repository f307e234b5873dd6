"""Search: the space's candidates, the proxy, and a whole search at tiny budgets (real torch, tiny teachers)."""

import json
import random

import pytest
import torch

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import spec_for_family
from edgedistill.distiller.student import make_student_from_arch
from edgedistill.models import create
from edgedistill.search import space as sp


def test_space_samples_buildable_archs_no_wider_than_the_teacher():
    spec = spec_for_family("resnet", {"ngf": 16, "n_blocks": 4, "norm": "instance"}, default_size=(32, 32))
    space = sp.space_for(spec)
    assert space.teacher_widths == [16, 32, 64, 32, 16]
    assert space.choices["norm"] == ["batch", "instance"] and space.choices["n_blocks"] == [1, 2, 3, 4]
    rng = random.Random(0)
    for _ in range(4):
        arch = sp.mutate(space, sp.sample(space, rng), rng)
        assert all(
            8 <= w <= t and w % 8 == 0 for w, t in zip(arch["widths"], space.teacher_widths, strict=True)
        )
        net = sp.build(spec, arch)
        assert net(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
        assert sp.macs_of(spec, arch) > 0
    # a choice equal to the teacher's is dropped: one model, one key
    assert sp.canonical(space, {"widths": [8] * 5, "norm": "instance", "kernel": 3}) == {
        "widths": [8] * 5,
        "kernel": 3,
    }
    # the uniform student is the --width student: same MACs as ngf scaled
    uni = sp.uniform_arch(space, 0.5)
    from edgedistill.metrics.complexity import measure_complexity

    want = measure_complexity(
        create("resnet", ngf=8, n_blocks=4, norm="instance"), (torch.rand(1, 3, 32, 32),)
    ).macs
    assert sp.macs_of(spec, uni) == want


def test_rescale_moves_every_stage_and_keeps_the_ops():
    """A well-scored student far under budget reaches it in one move: each stage one notch wider."""
    spec = spec_for_family("resnet", {"ngf": 64, "n_blocks": 6, "norm": "batch"}, default_size=(32, 32))
    space = sp.space_for(spec)
    arch = {"widths": [24, 32, 80, 16, 32], "upsample": "nearest", "n_blocks": 2, "kernel": 3}
    wider = sp.rescale(space, arch, 1)
    assert wider == {**arch, "widths": [32, 40, 96, 24, 32]}  # the last stage was at its widest
    assert sp.macs_of(spec, wider) > sp.macs_of(spec, arch)
    assert sp.rescale(space, wider, -1)["widths"][:4] == arch["widths"][:4]
    top = sp.rescale(space, arch, 9)  # never wider than the teacher's choices allow
    assert top["widths"] == [max(space.width_choices(i)) for i in range(5)]


def test_space_refuses_a_custom_module():
    from edgedistill.core.spec import GeneratorSpec, TensorSpec

    spec = GeneratorSpec(
        kind="image",
        inputs=[TensorSpec("x", ["N", 3, "H", "W"])],
        outputs=[TensorSpec("y", ["N", 3, "H", "W"])],
    )
    with pytest.raises(EdgeDistillError, match="built-in family"):
        sp.space_for(spec)


def test_proxy_trains_batchnorm_as_distillation_does():
    """An image student distils with BatchNorm frozen at its own re-estimated statistics: the proxy's
    fine-tune keeps them too (so it scores the function distillation will train); normalising by the
    batch, the statistics are re-estimated after and move with the trained weights."""
    from edgedistill.data.sources import Batch
    from edgedistill.distiller.config import DEFAULT_BN_STATS
    from edgedistill.search import proxy

    assert DEFAULT_BN_STATS["image"] == "frozen"
    spec = spec_for_family("resnet", {"ngf": 8, "n_blocks": 2, "norm": "batch"}, default_size=(16, 16))
    torch.manual_seed(0)
    teacher = create("resnet", ngf=8, n_blocks=2, norm="batch").eval()
    train, val = Batch(torch.rand(16, 3, 16, 16) * 2 - 1), Batch(torch.rand(4, 3, 16, 16) * 2 - 1)
    with torch.no_grad():
        data = proxy.ProxyData(train, teacher(train.inputs), val, teacher(val.inputs), (-1.0, 1.0))
    arch = {"widths": [8, 8, 16, 8, 8], "n_blocks": 1}

    def stats_after(bn_stats: str) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        student, _ = make_student_from_arch(teacher, spec, arch)
        proxy._recalibrate(student, train)
        norms = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        before = [m.running_mean.clone() for m in norms]
        first = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d)).weight.detach().clone()
        proxy.fine_tune(student, data, steps=5, bn_stats=bn_stats)
        moved = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d)).weight - first
        return before, [m.running_mean for m in norms], moved

    before, after, moved = stats_after("frozen")
    assert before and moved.abs().max() > 0  # the weights trained
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))
    before, after, _ = stats_after("batch")
    assert any(not torch.allclose(b, a) for b, a in zip(before, after, strict=True))
    with pytest.raises(ValueError, match="bn_stats"):
        proxy.score(teacher, spec, arch, data, steps=1, bn_stats="running")


def test_pareto_front_keeps_only_undominated_points():
    from edgedistill.search.result import Candidate, pareto_front

    cands = [
        Candidate({}, 1, predicted_ms=ms, proxy_psnr=q)
        for ms, q in [(1, 20), (2, 25), (2, 24), (3, 24), (4, 30)]
    ]
    assert pareto_front(cands) == [0, 1, 4]
    # inherited weights only (no short KD): another scale, off the front, even where "better"
    cands.append(Candidate({}, 1, predicted_ms=0.5, proxy_inherited=40))
    assert pareto_front(cands) == [0, 1, 4]


def test_growth_walks_children_towards_the_budget():
    """A student at half the budget: its mutated children land nearer 95 % of it, none far over."""
    from edgedistill.search.refine import grow
    from edgedistill.search.result import Candidate

    spec = spec_for_family("resnet", {"ngf": 32, "n_blocks": 6, "norm": "batch"}, default_size=(32, 32))
    space = sp.space_for(spec)
    arch = sp.uniform_arch(space, 0.25)
    macs = sp.macs_of(spec, arch)
    parent = Candidate(arch, macs, predicted_ms=macs / 1e6, uniform=0.25)
    budget = 2 * parent.predicted_ms
    cands = {sp.arch_key(arch): parent}
    children = grow(space, spec, None, [parent], cands, budget, 4, random.Random(0), tries=80)
    ms = [c.macs / 1e6 for c in children]  # latency linear in MACs: the walk's estimate is exact
    assert len(children) == 4 and all(c.grown and sp.arch_key(c.arch) in cands for c in children)
    assert all(m <= 1.1 * budget for m in ms)
    assert min(abs(m - 0.95 * budget) for m in ms) < 0.5 * abs(parent.predicted_ms - 0.95 * budget), ms


def _same(model, arch, spec):
    """Whether `model` is the candidate `arch` (the same parameter shapes)."""
    want = sp.build(spec, arch, "meta").state_dict()
    got = model.state_dict()
    return want.keys() == got.keys() and all(want[k].shape == got[k].shape for k in want)


def _macs(model, spec):
    from edgedistill.metrics.complexity import measure_complexity

    return measure_complexity(model.eval(), spec.example_inputs()).macs


def _tiny_search(teacher, budget: float, out, **overrides):
    """A quick search of a tiny teacher on ORT int8, its latency the MACs unless overridden."""
    from edgedistill.search.api import search

    opts = {"samples": 6, "predict_max": 6, "kd_top": 2, "kd_steps": 2, "log": lambda m: None,
            "latency_fn": lambda m, s: _macs(m, s) / 1e6, **overrides}  # fmt: skip
    return search(str(teacher), "x86-onnxruntime", budget, out=out, **opts)


def test_search_picks_a_candidate_within_budget_and_writes_its_front(tiny_generators, tmp_path):
    from edgedistill.models.loading import load_generator
    from edgedistill.search.api import search

    teacher = tiny_generators["dcgan"]
    loaded = load_generator(str(teacher))
    space = sp.space_for(loaded.spec)
    budget = _macs(sp.build(loaded.spec, sp.uniform_arch(space, 0.5)), loaded.spec) / 1e6 * 1.01
    result = _tiny_search(teacher, budget, tmp_path / "s")
    assert result.chosen.predicted_ms <= budget and result.chosen.proxy_psnr is not None
    assert (
        result.uniform is not None and result.uniform.uniform == 0.5 and result.uniform.proxy_psnr is not None
    )
    # children grown towards the budget: MACs latency makes their parent-scaled estimate exact
    grown = [c for c in result.candidates if c.grown]
    assert grown and all(c.predicted_ms <= 1.1 * budget for c in grown)
    assert len({sp.arch_key(c.arch) for c in result.candidates}) == len(result.candidates)
    saved = json.loads((tmp_path / "s" / "search.json").read_text())
    assert (
        saved["budget_ms"] == budget
        and saved["pareto"]
        and (tmp_path / "s" / "pareto.png").stat().st_size > 1000
    )
    arch = json.loads((tmp_path / "s" / "arch.json").read_text())
    student, spec = make_student_from_arch(loaded.module, loaded.spec, arch)
    assert student(*spec.example_inputs()).shape == (1, 1, 32, 32)
    front = [result.candidates[i] for i in result.pareto]
    tuned = [c for c in result.candidates if c.proxy_psnr is not None]
    assert front and all(c in tuned for c in front)
    for c in front:  # nothing fine-tuned is faster and better than a front point
        assert not any(o.predicted_ms < c.predicted_ms and o.quality > c.quality for o in tuned)
    # measured whole, the proxy's favourite runs at twice its prediction: the next best within budget wins
    best_key = sp.arch_key(result.chosen.arch)

    def measure(models):
        return [(2.0 if _same(m, result.chosen.arch, loaded.spec) else 1.0) * _macs(m, loaded.spec) / 1e6
                for m in models]  # fmt: skip

    verified = _tiny_search(teacher, budget, tmp_path / "v", measure_fn=measure)
    finalists = [c for c in verified.candidates if c.proxy_psnr is not None]
    assert len(finalists) >= 2 and all(c.measured_ms is not None for c in finalists)
    assert sp.arch_key(verified.chosen.arch) != best_key and verified.chosen.measured_ms <= budget
    assert verified.chosen.quality == max(c.quality for c in finalists if c.measured_ms <= budget)
    # the uniform baseline measured over budget: the next width down the ladder is measured and is the baseline
    wide = sp.uniform_arch(space, 0.5)

    def measure_wide(models):
        return [(2.0 if _same(m, wide, loaded.spec) else 1.0) * _macs(m, loaded.spec) / 1e6 for m in models]

    stepped = _tiny_search(teacher, budget, tmp_path / "w", measure_fn=measure_wide)
    assert stepped.uniform is not None and stepped.uniform.uniform < 0.5
    assert stepped.uniform.measured_ms <= budget and stepped.uniform.proxy_psnr is not None
    with pytest.raises(EdgeDistillError, match="no candidate fits"):
        search(str(teacher), "x86-onnxruntime", 1e-6, out=tmp_path / "t", samples=2, predict_max=2,
               latency_fn=lambda m, s: _macs(m, s) / 1e6, log=lambda m: None)  # fmt: skip
    with pytest.raises(EdgeDistillError, match="latency-ms must be > 0"):
        search(str(teacher), "x86-onnxruntime", 0, out=tmp_path / "u")


@pytest.mark.slow
def test_compress_with_a_latency_budget_searches_then_distills_the_chosen_arch(tmp_path):
    """Real latency model (ONNX Runtime int8 blocks timed here), real distill/export/profile. INT8 by
    default distils quantization-aware, so the search times the form a QAT student exports in."""
    from edgedistill.core.targets import get_target
    from edgedistill.models.loading import load_generator
    from edgedistill.pipeline.compress import CompressOptions, compress
    from edgedistill.profiler.api import profile
    from edgedistill.search.latency import predict_latency
    from edgedistill.search.latency_compile import as_qat_export

    spec = load_generator("digits-dcgan").spec
    uniform = sp.build(spec, sp.uniform_arch(sp.space_for(spec), 0.5))
    # the budget from the table the search reads, the QAT form's: read from the PTQ form's (another table,
    # timed apart), it once sat under every candidate (0.28 ms for this student, against 0.71 in the QAT one)
    qat_int8 = as_qat_export(get_target("x86-onnxruntime", "int8"))
    budget = round(predict_latency(uniform, spec, qat_int8, None, None, threads=1) * 1.05, 4)
    opts = CompressOptions(
        teacher="digits-dcgan", targets=["x86-onnxruntime"], out=tmp_path / "c", steps=20, cache=32, calib_size=16,
        threads=1, profile_seconds=0.5, samples=4, min_psnr=None, latency_ms=budget,
        search_options={"samples": 4, "predict_max": 4, "kd_top": 1, "kd_steps": 2, "evolve": 2,
                        "allow": {"upsample": ["convtranspose", "pixelshuffle"]}},  # (--allow reaches the search)
        distill_options={"eval_samples": 256},  # not the 10k digits held out: the test checks wiring
    )  # fmt: skip
    report = compress(opts, log=lambda m: None)
    found = report["search"]
    # measured whole, the choice holds the budget within the 10 % the issue allows (one predicted over it
    # may be chosen: the search re-anchors its table and walks its baseline up on measurements)
    assert found["budget_ms"] == budget and found["measured_ms"] is not None
    # the table now prices these 0.1-0.5 ms students within ~10 %, so the budget is tight, and this
    # shared VM has minutes that run every model 1.5-2x slow: a miss is profiled again, twice at most,
    # and the best p50 counts (timeit's rule)
    measured = found["measured_ms"]
    for _ in range(2):
        if measured <= 1.1 * budget:
            break
        again_ms = profile({"student": str(tmp_path / "c" / "exports" / "x86-onnxruntime-int8")}, threads=1,
                           min_time=1.0, layers=0, progress=False).models[0].stats.p50  # fmt: skip
        measured = min(measured, again_ms)
    assert measured <= 1.1 * budget, (measured, found)
    assert "as a QAT student exports" in found["latency_source"], found["latency_source"]
    student_spec = json.loads((tmp_path / "c" / "student" / "model.json").read_text())
    assert student_spec["kwargs"]["widths"] == found["arch"]["widths"]
    assert found["arch"].get("upsample", "convtranspose") in ("convtranspose", "pixelshuffle")
    searched = json.loads((tmp_path / "c" / "search" / "search.json").read_text())
    assert searched["allowed"] == {"upsample": ["convtranspose", "pixelshuffle"]}
    assert all(c["arch"].get("upsample", "convtranspose") != "nearest" for c in searched["candidates"])
    assert (
        "of a space limited to upsample=convtranspose,pixelshuffle)"
        in (tmp_path / "c" / "report.md").read_text()
    )
    again: list[str] = []
    compress(opts, log=again.append)
    assert any("search: unchanged, skipped" in m for m in again)


@pytest.mark.slow
def test_compress_with_a_latency_budget_on_a_device_over_ssh(tmp_path, monkeypatch):
    """--host: the latency table is measured on the device (a local sshd), OpenVINO this time, and the
    chosen student's artifact is re-measured there, where the budget holds, not here."""
    from test_profile_remote import _start_sshd, _stop

    from edgedistill.pipeline.compress import CompressOptions, compress
    from edgedistill.search import latency

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(latency, "BLOCK_CALLS", 3)
    (tmp_path / "sshd").mkdir()
    proc, reach = _start_sshd(tmp_path / "sshd", sftp=True)
    try:
        ssh = {
            "options": reach["ssh_options"],
            "identity": reach["identity"],
            "python": reach["remote_python"],
        }
        opts = CompressOptions(
            teacher="digits-dcgan", targets=["x86-openvino"], out=tmp_path / "c", steps=20, cache=32, calib_size=16,
            threads=1, profile_seconds=0.3, samples=4, min_psnr=None, qat_steps=0, latency_ms=5.0,
            host=reach["host"], ssh=ssh, search_options={"samples": 2, "predict_max": 1, "kd_top": 1, "kd_steps": 2, "evolve": 0},
            distill_options={"eval_samples": 256},
        )  # fmt: skip
        said: list[str] = []
        report = compress(opts, log=said.append)
    finally:
        _stop(proc)
    found = report["search"]
    assert found["measured_on"] == reach["host"] and found["measured_ms"] > 0
    assert found["latency_source"].endswith(f"on {reach['host']}"), found["latency_source"]
    tables = list((tmp_path / "cache" / "latency").glob("x86-openvino-int8-*.json"))
    assert tables and all(json.loads(t.read_text())["meta"]["host"] == reach["host"] for t in tables)
    assert any(f"measured on {reach['host']} (p50)" in m for m in said)


@pytest.mark.parametrize("table_scale", [1.25, 0.8])
def test_search_reanchors_a_table_whose_scale_is_off(tiny_generators, tmp_path, table_scale):
    """A table timed in a slow window (1.25x) leaves the budget unspent; in a fast one (0.8x) its picks
    run over it. Measured, the finalists give the scale: the search is redone in the table's units."""
    from edgedistill.models.loading import load_generator

    teacher = tiny_generators["dcgan"]
    loaded = load_generator(str(teacher))
    space = sp.space_for(loaded.spec)
    budget = _macs(sp.build(loaded.spec, sp.uniform_arch(space, 0.5)), loaded.spec) / 1e6 * 1.01
    result = _tiny_search(
        teacher, budget, tmp_path / "s", samples=8, predict_max=8,
        latency_fn=lambda m, s: table_scale * _macs(m, s) / 1e6,
        measure_fn=lambda models: [_macs(m, loaded.spec) / 1e6 for m in models],
    )  # fmt: skip
    assert result.measured_ratio == pytest.approx(1 / table_scale)
    assert result.chosen.measured_ms <= budget
    # the baseline is the widest uniform student that *measures* within budget, whatever the table said
    assert (
        result.uniform is not None and result.uniform.uniform == 0.5 and result.uniform.measured_ms <= budget
    )
    measured = [c for c in result.candidates if c.measured_ms is not None]
    if table_scale > 1:  # candidates the table put over budget were measured, and they fit
        assert any(c.predicted_ms > budget and c.measured_ms <= budget for c in measured)
    assert all(c.proxy_psnr is not None for c in measured)


def test_reanchoring_measures_the_finalists_again_with_the_new_candidates(tiny_generators, tmp_path):
    """The first session read 1.3x slow, the re-anchored one at speed: every finalist is timed again
    beside the new candidates, and every model is read from both sessions at the speed they agree on
    (search/readings.py), √1.3x here, old and new alike: the choice compares them all at one speed."""
    from edgedistill.models.loading import load_generator

    teacher = tiny_generators["dcgan"]
    loaded = load_generator(str(teacher))
    space = sp.space_for(loaded.spec)
    budget = _macs(sp.build(loaded.spec, sp.uniform_arch(space, 0.5)), loaded.spec) / 1e6 * 1.01
    sessions: list[int] = []

    def measure(models):
        sessions.append(len(models))
        slow = 1.3 if len(sessions) == 1 else 1.0
        return [slow * _macs(m, loaded.spec) / 1e6 for m in models]

    result = _tiny_search(teacher, budget, tmp_path / "s", samples=8, predict_max=8, measure_fn=measure)
    assert result.measured_ratio == pytest.approx(1.3)  # re-anchored on the slow session
    assert len(sessions) >= 2 and sessions[1] > sessions[0]  # the first session's finalists, timed again
    measured = [c for c in result.candidates if c.measured_ms is not None]
    assert all(c.measured_ms == pytest.approx(1.3**0.5 * _macs(sp.build(loaded.spec, c.arch), loaded.spec) / 1e6)
               for c in measured)  # fmt: skip
    assert result.session_factors[:2] == pytest.approx([1.3**0.5, 1.3**-0.5], rel=1e-3)
    assert result.chosen.measured_ms <= budget


def test_the_uniform_baseline_is_the_widest_that_measures_within_budget(tiny_generators, tmp_path):
    """Width 0.5 predicted 5 % over the budget (inside the model's error) measures 0.25 % under it: it
    is measured, beside the baseline, and is the baseline. (A later session that reads slow is read
    through the baseline timed in both: tests/test_readings.py.)"""
    from edgedistill.models.loading import load_generator

    teacher = tiny_generators["dcgan"]
    loaded = load_generator(str(teacher))
    budget = (
        _macs(sp.build(loaded.spec, sp.uniform_arch(sp.space_for(loaded.spec), 0.5)), loaded.spec)
        / 1e6
        / 1.05
    )
    sessions: list[int] = []

    def measure(models):
        sessions.append(len(models))
        return [0.95 * _macs(m, loaded.spec) / 1e6 for m in models]

    result = _tiny_search(teacher, budget, tmp_path / "s", measure_fn=measure)
    assert result.measured_ratio == pytest.approx(0.95)  # within the tolerance: no re-anchoring
    assert sessions[1:] == [2]  # the next width up, the baseline beside it
    assert result.uniform is not None and result.uniform.uniform == 0.5
    assert result.uniform.predicted_ms > budget >= result.uniform.measured_ms
    assert result.uniform.measured_ms == pytest.approx(0.95 * 1.05 * budget)
    assert result.uniform.proxy_psnr is not None and result.chosen.measured_ms <= budget


def test_the_next_width_up_is_weighed_in_measured_ms_when_the_table_reads_slow(tiny_generators, tmp_path):
    """The table reads 1.2x slow (1.3x on width 0.5): re-anchored, 0.5 stays over the budget in the
    table's units, but is within the model's error of it in measured ms, so it is measured, and fits."""
    from edgedistill.models.loading import load_generator

    teacher = tiny_generators["dcgan"]
    loaded = load_generator(str(teacher))
    space = sp.space_for(loaded.spec)
    widest = sp.uniform_arch(space, 0.5)
    budget = _macs(sp.build(loaded.spec, widest), loaded.spec) / 1e6 * 0.95 / 0.99

    def table(m, s):
        return (1.3 if _same(m, widest, s) else 1.2) * _macs(m, s) / 1e6

    result = _tiny_search(
        teacher, budget, tmp_path / "s", samples=8, predict_max=8, latency_fn=table,
        measure_fn=lambda models: [0.95 * _macs(m, loaded.spec) / 1e6 for m in models],
    )  # fmt: skip
    assert result.measured_ratio == pytest.approx(0.95 / 1.2)
    assert result.uniform is not None and result.uniform.uniform == 0.5
    assert (
        result.uniform.predicted_ms
        > budget / result.measured_ratio
        > result.uniform.measured_ms / result.measured_ratio
    )


def test_the_uniform_student_is_chosen_when_the_best_architecture_only_ties_it(tiny_generators, tmp_path):
    """The best architecture leads the uniform student by less than `tie_db` on the proxy: the uniform
    student is chosen, unless the architecture measures faster by more than one session's noise."""
    from edgedistill.models.loading import load_generator

    teacher = tiny_generators["dcgan"]
    loaded = load_generator(str(teacher))
    width = sp.uniform_arch(sp.space_for(loaded.spec), 0.35)
    base_ms = _macs(sp.build(loaded.spec, width), loaded.spec) / 1e6
    best: dict = {}

    def measure(models):  # the best architecture measures best["speed"] x the uniform student
        return [best["speed"] * base_ms if best and _same(m, best["arch"], loaded.spec) else _macs(m, loaded.spec) / 1e6
                for m in models]  # fmt: skip

    plain = _tiny_search(teacher, base_ms * 1.15, tmp_path / "a", measure_fn=measure, tie_db=0.0)
    assert plain.uniform is not None and plain.uniform.uniform == 0.35
    lead = plain.chosen.quality - plain.uniform.quality
    assert sp.arch_key(plain.chosen.arch) != sp.arch_key(width) and lead > 0
    for speed, expected in ((1.0, width), (0.8, plain.chosen.arch)):
        best.update(arch=plain.chosen.arch, speed=speed)
        out = tmp_path / f"tied-{speed}"
        tied = _tiny_search(teacher, base_ms * 1.15, out, measure_fn=measure, tie_db=lead + 0.01)
        assert sp.arch_key(tied.chosen.arch) == sp.arch_key(expected), speed
        assert json.loads((out / "arch.json").read_text()) == tied.chosen.arch
