"""Profile arithmetic that needs no runtime: stats, interleaving, stopping rules, layers, hosts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgedistill.backends.base import LayerTime
from edgedistill.core.errors import EdgeDistillError
from edgedistill.profiler.remote import SshHost, parse_host, parse_result, ssh_error
from edgedistill.runtime.layers import precision_mix, top_layers
from edgedistill.runtime.roofline import achieved_gops, peak_for, percent, theoretical_peaks
from edgedistill.runtime.session import output_psnr
from edgedistill.runtime.stats import noisy, summarize
from edgedistill.runtime.timing import measure_rounds, thread_limit, warm_up


def test_stats_known_percentiles():
    # 1..100 ms: numpy's linear-interpolation percentiles are known in closed form.
    times_ns = [i * 1_000_000 for i in range(100, 0, -1)]  # order must not matter
    s = summarize(times_ns, batch=1)
    assert s.n == 100
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.p99 == pytest.approx(99.01)
    assert s.mean == pytest.approx(50.5)
    assert s.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s.min == 1.0 and s.max == 100.0
    assert s.cv == pytest.approx(s.std / 50.5)
    assert s.fps == pytest.approx(1000 / 50.5)
    assert s.total_s == pytest.approx(5.05)
    assert summarize(times_ns, batch=4).fps == pytest.approx(4000 / 50.5)


def test_stats_steady_vs_noisy():
    steady = summarize([10_000_000] * 50)
    assert steady.std == 0 and steady.cv == 0 and not noisy(steady)
    jumpy = summarize([10_000_000, 30_000_000] * 25)
    assert jumpy.cv == pytest.approx(0.505, abs=0.01) and noisy(jumpy, 0.1) and not noisy(jumpy, 0.6)
    one = summarize([5_000_000])
    assert one.p99 == 5.0 and one.std == 0.0 and not noisy(one)
    with pytest.raises(ValueError):
        summarize([])


def test_rounds_interleave_in_order():
    order: list[str] = []

    def runner(tag: str):
        return lambda inputs: order.append(tag + inputs)

    calls = [(runner("A"), "1"), (runner("B"), "2"), (runner("C"), "3")]
    m = measure_rounds(calls, iterations=4, min_time=0.0)
    assert order == ["A1", "B2", "C3"] * 4
    assert m.rounds == 4 and [len(t) for t in m.times_ns] == [4, 4, 4]
    assert all(t >= 0 for times in m.times_ns for t in times) and not m.interrupted


def test_a_model_after_another_runtime_is_called_once_untimed_first():
    """The first model of each runtime in a round follows another runtime's, whose workers may still
    spin: it is called once untimed, then timed; a model after one of its own runtime is not."""
    from edgedistill.core.errors import EdgeDistillError
    from edgedistill.runtime.session import runtime_switches, settle_calls

    assert runtime_switches(["torch", "onnxruntime", "onnxruntime", "openvino"]) == [True, True, False, True]
    assert runtime_switches(["onnxruntime", "openvino", "openvino", "onnxruntime"]) == [
        False,
        True,
        False,
        True,
    ]
    assert runtime_switches(["openvino", "openvino"]) == [False, False]
    assert settle_calls("all", ["openvino", "openvino"]) == [True, True]
    assert settle_calls("none", ["torch", "openvino"]) == [False, False]
    assert settle_calls("switch", ["torch", "openvino"]) == [True, True]
    # "short": the runtime switches and every model whose warm call ran under SHORT_CALL_MS
    ort3 = ["onnxruntime"] * 3
    assert settle_calls("short", ort3, [0.1, 15.0, 1.9]) == [True, False, True]
    assert settle_calls("short", ["onnxruntime", "openvino"], [15.0, 30.0]) == [True, True]
    with pytest.raises(EdgeDistillError, match="settle must be"):
        settle_calls("sometimes", ["torch"])
    order: list[str] = []

    def runner(tag: str):
        def run(_inputs: object) -> None:
            order.append(tag)
            if tag == "B" and order.count("B") % 2:  # B's settling calls are slow (a pool waking)
                time.sleep(0.05)

        return run

    calls = [(runner("A"), None), (runner("B"), None), (runner("C"), None)]
    m = measure_rounds(calls, iterations=2, min_time=0.0, settle=[False, True, False])
    assert order == ["A", "B", "B", "C"] * 2
    assert [len(t) for t in m.times_ns] == [2, 2, 2]
    assert max(m.times_ns[1]) < 0.04e9, "the settling call is not timed"


def test_rounds_time_the_call_and_run_until_min_time():
    def sleepy(seconds):
        time.sleep(seconds)

    m = measure_rounds([(sleepy, 0.004), (sleepy, 0.0)], iterations=2, min_time=0.1)
    assert m.rounds >= 2 and m.wall_s >= 0.1
    slow, fast = summarize(m.times_ns[0]), summarize(m.times_ns[1])
    assert slow.min >= 4.0  # sleep(4 ms) never takes less
    assert fast.p50 < slow.p50
    capped = measure_rounds([(sleepy, 0.002)], iterations=10_000, min_time=0.0, max_time=0.05)
    assert capped.rounds < 10_000 and capped.wall_s < 1.0


def test_measuring_time_excludes_the_collection_before_it():
    """gc.collect() runs before the first round; in a process full of objects it takes a while, and
    that time once counted toward min_time/max_time and the wall time."""
    import gc

    slow = [[object() for _ in range(50)] for _ in range(20_000)]  # ~1M objects for the collector
    for _ in range(2):
        slow = [slow, [slow]]  # cycles, so gc must traverse
    t0 = time.perf_counter()
    gc.collect()
    collect_s = time.perf_counter() - t0
    m = measure_rounds([(lambda _x: None, None)], iterations=1, min_time=0.0)
    assert m.wall_s < collect_s / 2, (m.wall_s, collect_s)
    del slow


def test_ctrl_c_keeps_complete_rounds():
    calls_made = {"n": 0}

    def a(_):
        calls_made["n"] += 1
        if calls_made["n"] == 4:  # the 4th call of A: round 4 is cut short
            raise KeyboardInterrupt

    m = measure_rounds([(a, None), (lambda _: None, None)], iterations=100, min_time=0.0)
    assert m.interrupted and m.rounds == 3 and [len(t) for t in m.times_ns] == [3, 3]

    def first(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # nothing measured: the interrupt goes on
        measure_rounds([(first, None)], iterations=3, min_time=0.0)


def test_progress_callback_between_rounds_only():
    seen = []
    m = measure_rounds(
        [(lambda _: None, None)], 50, 0.0, on_round=lambda r, e: seen.append(r), report_every=0
    )
    assert seen[-1] == m.rounds == 50 and seen == sorted(seen)


def test_warm_up_count_and_time():
    calls = []
    assert warm_up(calls.append, 1, count=3, seconds=0.0) == 3
    start = time.perf_counter()
    n = warm_up(lambda _: time.sleep(0.001), None, count=1, seconds=0.05)
    assert n > 1 and time.perf_counter() - start >= 0.05


def test_thread_limit_restores_torch_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with thread_limit(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_layers_top_n_and_mix():
    layers = [
        LayerTime("conv1", "Convolution", 2.0, "jit_avx512_I8"),
        LayerTime("conv2", "Convolution", 5.0, "jit_avx512_FP32"),
        LayerTime("conv1", "Convolution", 1.0, "jit_avx512_I8"),  # one node reported twice: summed
        LayerTime("relu", "Relu", 2.0, "jit_avx512_I8"),
    ]
    rows, total = top_layers(layers, 2)
    assert total == 10.0
    assert [(r["name"], r["ms"], r["pct"]) for r in rows] == [("conv2", 5.0, 50.0), ("conv1", 3.0, 30.0)]
    assert rows[1]["precision"] == "jit_avx512_I8"
    assert precision_mix(layers) == {"jit_avx512_I8": 50.0, "jit_avx512_FP32": 50.0}


def test_profile_compares_outputs_with_the_one_psnr():
    """Outputs in the spec's range [-1, 1] are mapped to [0, 1]; identical ones hit the shared cap."""
    from types import SimpleNamespace

    from edgedistill.core.quality import MAX_PSNR

    def live(y):
        return SimpleNamespace(
            output=y, source=SimpleNamespace(spec=SimpleNamespace(output_range=(-1.0, 1.0)))
        )

    a = np.zeros((1, 3, 16, 16), np.float32)
    assert output_psnr(live(a), live(a)) == MAX_PSNR
    assert output_psnr(live(a), live(a + 0.2)) == pytest.approx(20.0, abs=1e-3)  # 0.1 in [0, 1]
    assert output_psnr(live(a), live(np.zeros((1, 3, 8, 8), np.float32))) is None


def test_roofline_arithmetic():
    assert achieved_gops(1_000_000_000, 10.0) == pytest.approx(200.0)  # 2 GOP in 10 ms
    assert achieved_gops(None, 10.0) is None
    peaks = {"fp32": 400.0, "int8": 1600.0}
    assert peak_for(peaks, "int8") == 1600.0 and peak_for(peaks, "bf16") == 400.0
    assert percent(200.0, 400.0) == 50.0 and percent(200.0, None) is None
    theo = theoretical_peaks(1)
    assert "basis" in theo


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pi@jetson.local", SshHost("pi", "jetson.local")),
        ("root@127.0.0.1:2222", SshHost("root", "127.0.0.1", 2222)),
        ("board", SshHost(None, "board")),
        ("me@[::1]:22", SshHost("me", "::1", 22)),
    ],
)
def test_parse_host(text, expected):
    host = parse_host(text)
    assert host == expected
    assert str(host) == text


@pytest.mark.parametrize(
    "text",
    [
        "-oProxyCommand=touch x",
        "me@-p",
        "a b@host",
        "me@host:0",
        "me@host:99999",
        "me@ho;st",
        "me@[zz]:1",
        "",
    ],
)
def test_parse_host_refuses_option_like_and_odd_names(text):
    with pytest.raises(EdgeDistillError, match="user@host"):
        parse_host(text)


def test_ssh_errors_are_one_line():
    host = parse_host("me@dev:2200")
    assert "connection refused on port 2200" in ssh_error(
        host, "ssh: connect to host dev port 2200: Connection refused"
    )
    assert "host name not found" in ssh_error(
        host, "ssh: Could not resolve hostname dev: Name or service not known"
    )
    assert "authentication failed" in ssh_error(host, "me@dev: Permission denied (publickey).")
    assert "host key" in ssh_error(host, "Host key verification failed.")
    assert "unreachable" in ssh_error(host, "ssh: connect to host dev port 2200: Connection timed out")
    with pytest.raises(EdgeDistillError, match="not found on the device"):
        parse_result(host, "python9", 127, "", "env: 'python9': No such file or directory")
    with pytest.raises(EdgeDistillError, match="pip install numpy"):
        parse_result(host, "python3", 1, "", "ModuleNotFoundError: No module named 'numpy'")
    with pytest.raises(EdgeDistillError, match="onnxruntime cannot run"):
        parse_result(host, "python3", 3, '@@edgedistill-result {"error": "m: onnxruntime cannot run"}\n', "")


def test_models_of_one_name_are_named_by_the_paths_that_differ(tmp_path):
    """Each run's `exports/x86-openvino-int8` in one profile: rows say which run, not #2, #3."""
    from edgedistill.runtime.sources import Source, unique_labels

    def src(given: str, label: str = "x86-openvino-int8") -> Source:
        return Source(label, given, "artifact", "openvino", "int8", None, None)

    runs = [
        src(str(tmp_path / r / "exports" / "x86-openvino-int8"))
        for r in ("a/uniform", "a-plain/uniform", "a/searched")
    ]
    twice = [src(str(tmp_path / "m.onnx"), "m.onnx"), src(str(tmp_path / "m.onnx"), "m.onnx")]
    clash = src(str(tmp_path / "a" / "uniform.onnx"), "a/uniform")  # a file named like a path-made name
    sources = [*runs, *twice, clash]
    unique_labels(sources)
    assert [s.label for s in sources] == ["a/uniform", "a-plain/uniform", "a/searched", "m.onnx", "m.onnx #2",
                                          "a/uniform #2"]  # fmt: skip
