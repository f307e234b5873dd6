"""`--allow`: the user's limits on the search space bind every candidate, the baseline included."""

import json
import random
import subprocess
import sys

import pytest
import torch
from test_search import _tiny_search

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import spec_for_family
from edgedistill.search import space as sp


def test_allowed_choices_bind_every_candidate_the_uniform_baseline_included():
    """`--allow block=plain` (a texture the user saw) or `upsample=...` (an op their device runs badly)."""
    spec = spec_for_family("resnet", {"ngf": 16, "n_blocks": 4, "norm": "instance"}, default_size=(32, 32))
    allow = sp.parse_allow(["block=plain", "upsample=pixelshuffle,nearest", "n_blocks=2"])
    assert allow == {"block": ["plain"], "upsample": ["pixelshuffle", "nearest"], "n_blocks": ["2"]}
    assert (
        sp.allow_text(allow) == "block=plain upsample=pixelshuffle,nearest n_blocks=2"
    )  # as --allow takes it
    space = sp.restrict(sp.space_for(spec), allow)
    assert space.choices["n_blocks"] == [2]  # CLI strings select the int options
    rng = random.Random(0)
    archs = [sp.sample(space, rng) for _ in range(30)]
    archs += [sp.mutate(space, a, rng, p=1.0) for a in archs]
    assert all(
        a.get("block", "plain") == "plain" and a["upsample"] in ("pixelshuffle", "nearest") for a in archs
    )
    assert {a["upsample"] for a in archs} == {"pixelshuffle", "nearest"} and all(
        a["n_blocks"] == 2 for a in archs
    )
    # the teacher's ConvTranspose is not allowed: the uniform student takes the first allowed op
    uni = sp.uniform_arch(space, 0.5)
    assert uni == {"widths": [8, 16, 32, 16, 8], "upsample": "pixelshuffle", "n_blocks": 2}
    assert sp.build(spec, uni)(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(EdgeDistillError, match="no such choice; its choices: upsample, norm, block"):
        sp.restrict(sp.space_for(spec), {"blocks": ["plain"]})
    with pytest.raises(
        EdgeDistillError, match=r"dws is not one of block's options on resnet \(plain, dwsep\)"
    ):
        sp.restrict(sp.space_for(spec), {"block": ["plain", "dws"]})
    with pytest.raises(EdgeDistillError, match="expected KEY=OPTION"):
        sp.parse_allow(["block"])


def test_a_search_with_allowed_choices_keeps_to_them(tiny_generators, tmp_path):
    teacher = tiny_generators["dcgan"]
    result = _tiny_search(teacher, 1e9, tmp_path / "s", allow={"upsample": ["nearest"]}, samples=3, predict_max=3,
                          kd_top=1, evolve=0)  # fmt: skip
    assert result.uniform is not None and result.uniform.arch["upsample"] == "nearest"
    assert all(c.arch["upsample"] == "nearest" for c in result.candidates)
    saved = json.loads((tmp_path / "s" / "search.json").read_text())
    assert saved["allowed"] == {"upsample": ["nearest"]}
    assert json.loads((tmp_path / "s" / "arch.json").read_text())["upsample"] == "nearest"


def test_the_cli_refuses_an_allow_it_cannot_apply_in_one_line(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "edgedistill", *args], capture_output=True, text=True, timeout=120
        )

    r = cli("search", "photo-restore", "-t", "x86-onnxruntime", "--latency-ms", "10", "--allow", "blocks=plain",
            "--out", str(tmp_path / "s"))  # fmt: skip
    assert r.returncode != 0 and "--allow blocks: the resnet search space has no such choice" in r.stderr
    r = cli("compress", "photo-restore", "-t", "x86-onnxruntime", "--allow", "block=plain",
            "--out", str(tmp_path / "c"))  # fmt: skip
    assert r.returncode != 0 and "give --latency-ms with it" in r.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()
