"""Calibration sets: from an image folder, noise, the embedded teacher's recipe; errors; the cache."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.spec import spec_for_family
from edgedistill.data.calibration import build_calibration, load_recipe
from edgedistill.models.embedded import embedded_teachers

pytestmark = pytest.mark.filterwarnings("ignore:only .* calibration samples")


@pytest.fixture
def rgb_spec():
    return spec_for_family("resnet", {"ngf": 8, "n_blocks": 2})  # image, 3 channels, range [-1, 1]


@pytest.fixture
def noise_spec():
    return spec_for_family("dcgan", {"nz": 16, "ngf": 8, "nc": 1, "image_size": 32})


def _folder(tmp_path, n=5, mode="RGB", name="imgs"):
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 20 + 7 * i, 30 + 5 * i
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"img{i}.png")
    return folder


def test_from_folder_resizes_crops_and_maps_range(tmp_path, rgb_spec):
    folder = _folder(tmp_path, n=5)
    # a white image whose center is black: after cover-resize + center crop only black remains
    img = np.full((40, 80, 3), 255, np.uint8)
    img[:, 10:70] = 0
    Image.fromarray(img).save(folder / "center.png")
    (folder / "notes.txt").write_text("not an image")
    calib = build_calibration(rgb_spec, folder, 6, input_size=(16, 16), method="minmax")
    x = calib.arrays["image"]
    assert x.shape == (6, 3, 16, 16) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.2
    assert any(np.all(s == -1.0) for s in x), "the center crop of the black-centred image is pure black (-1)"
    assert calib.method == "minmax" and str(folder) in calib.source


def test_few_images_give_as_many_crops_as_asked(tmp_path, rgb_spec):
    """A folder of a few images serves every sample asked for: seeded crops, spread over the images."""
    folder = _folder(tmp_path, n=3)
    calib = build_calibration(rgb_spec, folder, 40, input_size=(8, 8))
    x = calib.arrays["image"]
    assert len(calib) == 40 and len({a.tobytes() for a in x}) == 40


def test_noise_for_noise_generators(noise_spec):
    calib = build_calibration(noise_spec, "noise", 256, seed=3)
    z = calib.arrays["z"]
    assert z.shape == (256, 16, 1, 1)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    again = build_calibration(noise_spec, "noise", 256, seed=3)
    np.testing.assert_array_equal(z, again.arrays["z"])


def test_noise_generator_without_source_uses_noise(noise_spec):
    assert build_calibration(noise_spec, None, 32).arrays["z"].shape == (32, 16, 1, 1)


def test_embedded_photo_recipe():
    spec = embedded_teachers()["photo-restore"].spec
    calib = build_calibration(spec, None, 6, teacher="photo-restore", input_size=(32, 48), seed=1)
    x = calib.arrays["image"]
    assert x.shape == (6, 3, 32, 48)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert "photo-restore" in calib.source
    # degraded photo crops: smooth-ish images, not uniform noise (neighbouring pixels correlate)
    corr = np.corrcoef(x[:, :, :, :-1].ravel(), x[:, :, :, 1:].ravel())[0, 1]
    assert corr > 0.5
    other = build_calibration(spec, None, 6, teacher="photo-restore", input_size=(32, 48), seed=2)
    assert not np.array_equal(x, other.arrays["image"])


def test_digits_recipe_is_noise():
    spec = embedded_teachers()["digits-dcgan"].spec
    assert load_recipe("digits-dcgan")["source"] == "noise"
    assert build_calibration(spec, None, 32, teacher="digits-dcgan").arrays["z"].shape == (32, 64, 1, 1)


def test_student_run_finds_its_teachers_recipe(tmp_path, rgb_spec):
    run = tmp_path / "runs" / "student"
    run.mkdir(parents=True)
    rgb_spec.provenance = {"config": {"teacher": "photo-restore"}}
    rgb_spec.save(run / "model.json")
    assert load_recipe(run)["teacher"] == "photo-restore"
    calib = build_calibration(rgb_spec, None, 4, teacher=str(run), input_size=(16, 16))
    assert calib.arrays["image"].shape == (4, 3, 16, 16)
    # the spec's own provenance is enough too
    assert build_calibration(rgb_spec, None, 4, input_size=(16, 16)).source == calib.source


def test_image_generator_without_data_asks_for_calib_data(rgb_spec):
    with pytest.raises(EdgeDistillError, match="--calib-data"):
        build_calibration(rgb_spec, None, 4)
    with pytest.raises(EdgeDistillError, match="no calibration recipe for 'mystery'"):
        load_recipe("mystery")


def test_noise_for_an_image_generator_is_refused(rgb_spec):
    with pytest.raises(EdgeDistillError, match="noise-input generators"):
        build_calibration(rgb_spec, "noise", 4)


def test_empty_folder(tmp_path, rgb_spec):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeDistillError, match="holds no images"):
        build_calibration(rgb_spec, tmp_path / "empty", 4)


def test_unreadable_images(tmp_path, rgb_spec):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    (folder / "b.jpg").write_bytes(b"")
    with pytest.raises(EdgeDistillError, match=r"no readable image \(2 image file"):
        build_calibration(rgb_spec, folder, 4)


def test_missing_folder(tmp_path, rgb_spec):
    with pytest.raises(EdgeDistillError, match="not found"):
        build_calibration(rgb_spec, tmp_path / "nope", 4)


def test_channel_mismatch(tmp_path, rgb_spec):
    gray = _folder(tmp_path, n=2, mode="L", name="gray")
    with pytest.raises(EdgeDistillError, match=r"1-channel \(L\) image, but the generator takes 3 channels"):
        build_calibration(rgb_spec, gray, 2, input_size=(8, 8))
    gray_spec = spec_for_family("resnet", {"ngf": 8, "n_blocks": 2, "input_nc": 1, "output_nc": 1})
    assert build_calibration(gray_spec, gray, 2, input_size=(8, 8)).arrays["image"].shape == (2, 1, 8, 8)
    # a colouriser (1 -> 3 channels) calibrates on colour photos as it runs on them: as grayscale
    color = _folder(tmp_path, n=2, name="color")
    assert build_calibration(gray_spec, color, 2, input_size=(8, 8)).arrays["image"].shape == (2, 1, 8, 8)


def test_bad_method_and_percentile(rgb_spec, tmp_path):
    folder = _folder(tmp_path, n=2)
    with pytest.raises(EdgeDistillError, match="minmax, entropy, percentile"):
        build_calibration(rgb_spec, folder, 2, method="kl")
    with pytest.raises(EdgeDistillError, match="percentile"):
        build_calibration(rgb_spec, folder, 2, percentile=150)


def test_small_set_warns(noise_spec):
    with pytest.warns(UserWarning, match="only 8 calibration samples"):
        build_calibration(noise_spec, "noise", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_calibration(noise_spec, "noise", 32)


def test_cache_reuse_and_invalidation(tmp_path, rgb_spec):
    folder = _folder(tmp_path, n=6)
    cache = tmp_path / "cache"
    first = build_calibration(rgb_spec, folder, 4, input_size=(16, 16), cache=cache, method="minmax")
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and not first.meta.get("cached")
    second = build_calibration(rgb_spec, folder, 4, input_size=(16, 16), cache=cache, method="percentile")
    assert second.meta.get("cached") and second.method == "percentile" and second.source == first.source
    np.testing.assert_array_equal(first.arrays["image"], second.arrays["image"])
    # a changed folder, size, seed or input size is a different set
    build_calibration(rgb_spec, folder, 4, input_size=(16, 16), cache=cache, seed=1)
    build_calibration(rgb_spec, folder, 4, input_size=(8, 8), cache=cache)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(folder / "new.png")
    third = build_calibration(rgb_spec, folder, 4, input_size=(16, 16), cache=cache)
    assert not third.meta.get("cached")
    assert len(list(cache.glob("*.npz"))) == 4
    # a damaged cache file is rebuilt, not trusted
    files[0].write_bytes(b"junk")
    fourth = build_calibration(rgb_spec, folder, 4, input_size=(16, 16), cache=cache)
    assert fourth.arrays["image"].shape == (4, 3, 16, 16)


def test_npz_source(tmp_path, noise_spec):
    saved = build_calibration(noise_spec, "noise", 40, seed=5)
    saved.save(tmp_path / "calib.npz")
    back = build_calibration(noise_spec, tmp_path / "calib.npz", 32)
    np.testing.assert_array_equal(back.arrays["z"], saved.arrays["z"][:32])


def test_recipe_files_are_valid():
    for name in ("photo-restore", "digits-dcgan"):
        recipe = load_recipe(name)
        assert recipe["teacher"] == name and recipe["method"] in ("minmax", "entropy", "percentile")
        json.dumps({k: v for k, v in recipe.items()})


@pytest.fixture
def recipes(tmp_path, monkeypatch):
    """A recipe folder of our own in place of the shipped calibration/ (the lookup, not a runtime)."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    monkeypatch.setattr("edgedistill.data.calibration.data_dir", lambda _name: folder)
    return folder


def test_malformed_recipe_fails_naming_file_and_fault(recipes, noise_spec):
    (recipes / "syntax.toml").write_text('teacher = "syntax"\nsource = "noise"\nmethod = "minmax\n')
    (recipes / "unknown.toml").write_text('teacher = "unknown"\nsource = "noise"\nmethod = "kl"\n')
    (recipes / "typo.toml").write_text('teacher = "typo"\nsource = "noise"\nmethd = "entropy"\n')
    (recipes / "where.toml").write_text('teacher = "where"\nsource = "nowhere"\n')
    cases = {
        "syntax": r"syntax\.toml.*line 3",
        "unknown": r"unknown\.toml.*method 'kl'",
        "typo": r"typo\.toml.*'methd'",
        "where": r"where\.toml.*source 'nowhere'",
    }
    for name, message in cases.items():
        with pytest.raises(EdgeDistillError, match=message) as err:
            build_calibration(noise_spec, None, 32, teacher=name)  # no silent fall back to noise/minmax
        assert "\n" not in str(err.value)
        if name != "where":  # its file parses: the source is checked when it is used
            with pytest.raises(EdgeDistillError, match=message):
                load_recipe(name)
    (recipes / "fine.toml").write_text('teacher = "fine"\nsource = "noise"\nmethod = "entropy"\n')
    assert load_recipe("fine")["method"] == "entropy"
    assert build_calibration(noise_spec, None, 32, teacher="fine").arrays["z"].shape == (32, 16, 1, 1)


def test_calibration_json_records_stable_facts_and_no_stale_path(tmp_path, rgb_spec):
    """The ranges cache (an artifact's calibration.json) names no path, least of all a temp one;
    a cache that names one (an older file) is not trusted when read back."""
    import onnx

    from edgedistill.exporter.onnx_export import export_onnx
    from edgedistill.models import create
    from edgedistill.onnxtools.qdq import TensorRanges, compute_ranges, quantize_qdq

    folder = _folder(tmp_path, n=6)
    calib = build_calibration(rgb_spec, folder, 6, input_size=(16, 16), method="minmax")
    model = tmp_path / "m.onnx"
    export_onnx(create("resnet", ngf=8, n_blocks=2).eval(), rgb_spec, model, size=(16, 16), dynamic=False)
    ranges = compute_ranges(model, calib, tmp_path / "work", progress=False)
    saved = json.loads(ranges.save(tmp_path / "calibration.json").read_text())

    def strings(x):
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        return (
            [s for v in x for s in strings(v)] if isinstance(x, list) else [x] if isinstance(x, str) else []
        )

    assert not [s for s in strings(saved) if "/" in s], saved  # no path: not the folder, not the work dir
    facts = saved["meta"]["calibration"]
    assert (
        facts["plan"]["kind"] == "folder"
        and facts["plan"]["fingerprint"] == calib.meta["plan"]["fingerprint"]
    )
    # an older cache naming a pre-processed model that is now something else: never used
    decoy = tmp_path / "decoy.onnx"
    other = create("resnet", ngf=4, n_blocks=1).eval()
    export_onnx(other, rgb_spec, decoy, size=(16, 16), dynamic=False)
    stale = {**saved, "preprocessed": str(decoy)}
    (tmp_path / "old.json").write_text(json.dumps(stale))
    back = TensorRanges.load(tmp_path / "old.json")
    assert back.preprocessed is None
    out = quantize_qdq(model, tmp_path / "q.onnx", back)
    convs = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv"]
    assert len(convs) == len([n for n in onnx.load(str(model)).graph.node if n.op_type == "Conv"])
