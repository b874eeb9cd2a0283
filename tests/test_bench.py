"""asisr-bench: the harness end to end on tiny jobs, FLOP counting, the GEMM yardstick, the
RSS sampler, and the CLI's input checks. FLOPs are checked against counts made here (analytic, or
FlopCounterMode), timings only against a clock scripted here or, within a generous factor, a timing made here."""

from __future__ import annotations

import json
import mmap
import os
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from asisr.bench.flops import TileFlopCounter
from asisr.bench.gemm import gemm_flops, measure_gemm_peak
from asisr.bench.harness import BenchConfig, run_bench
from asisr.bench.jobs import synthetic_frame
from asisr.bench.memory import RssSampler, current_rss
from asisr.bench.report import to_markdown, write_outputs
from asisr.cli.bench import main as bench_main
from asisr.cli.run import main as run_main
from asisr.models import create
from asisr.runtime.tiling import TilePlan, lr_spans, query_spans
from tests.cli_helpers import assert_user_error, invoke

LINUX = sys.platform.startswith("linux")  # /proc/self/status: the RSS sampler must measure
TINY = dict(c=16, n_res=2, hidden=[32, 32])  # conftest's tiny_liif_ckpt
# job -> [(LR (h, w), output (h, w))] of each image: the fixture's HR sizes are multiples of 4, so set5_x4's
# LR is HR / 4 and the output is the HR size; 40x30@2.5 is a 40 wide, 30 high frame at x2.5
JOB_SHAPES = {"set5_x4": [((12, 10), (48, 40)), ((9, 13), (36, 52))], "40x30@2.5": [((30, 40), (75, 100))]}
ROW_FIELDS = ("median_s", "min_s", "max_s", "seconds", "mpx_per_s", "peak_rss_mib", "ru_maxrss_mib", "flops",
              "gflops_per_s", "gemm_ratio", "psnr", "psnr_delta", "tile", "lr_tile")


@pytest.fixture(scope="module")
def tiny_set5(tmp_path_factory):
    """Two small HR images in a folder, standing in for Set5 (the job only needs a folder of HR images)."""
    folder = tmp_path_factory.mktemp("set5")
    for i, (h, w) in enumerate([(48, 40), (36, 52)]):
        Image.fromarray(synthetic_frame(h, w, seed=i)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def report(tiny_liif_ckpt, tiny_liif_onnx, tiny_set5):
    cfg = BenchConfig(model=tiny_liif_ckpt, onnx_dir=tiny_liif_onnx, set5=tiny_set5,
                      jobs=["set5_x4", "40x30@2.5"],
                      backends=["torch-ref", "torch", "onnxruntime", "onnxruntime-int8", "openvino-bf16", "default",
                                "tensorrt"],
                      threads=1, repeats=1, ref_jobs=None, gemm_n=64)
    return run_bench(cfg)


def test_harness_rows_have_every_field(report):
    rows = {(r["job"], r["backend"]): r for r in report["rows"]}
    assert len(rows) == 14
    peak_gflops = report["gemm_peak"]["gflops"]
    peaks = report["precision_peaks"]
    assert set(peaks) == {"fp32", "bf16", "int8"} and all(v > 0 for v in peaks.values())
    for job in ("set5_x4", "40x30@2.5"):
        shapes = JOB_SHAPES[job]
        mpx = sum(h * w for _, (h, w) in shapes) / 1e6
        for backend in ("torch-ref", "torch", "onnxruntime"):
            r = rows[job, backend]
            assert r["status"] == "ok", r
            for f in ROW_FIELDS:
                assert f in r, f
            assert len(r["seconds"]) == 1 and r["median_s"] == r["min_s"] == r["max_s"] == r["seconds"][0] > 0
            assert r["output_mpx"] == pytest.approx(mpx) and r["mpx_per_s"] == pytest.approx(mpx / r["median_s"])
            if LINUX:  # the sampler reads VmRSS, so it must give a number
                assert r["rss_start_mib"] > 0 and r["peak_rss_mib"] >= r["rss_start_mib"]
                # the kernel's lifetime high-water mark is an independent reading in the same units. It
                # covers the whole pytest process (earlier tests may have used more), so it bounds the row's
                # peak from above only; its counters lag VmRSS a little (seen: 50 KiB), hence the factor.
                # KiB read as bytes fails the first bound, bytes read as KiB the second (RAM size).
                assert r["peak_rss_mib"] < r["ru_maxrss_mib"] * 2
                assert r["ru_maxrss_mib"] < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
                assert r["rss_growth_mib"] == pytest.approx(r["peak_rss_mib"] - r["rss_start_mib"])
            # FLOPs: an analytic count of tiny LIIF at the job's shapes (one tile per image here: the LR
            # window of the upsampler is the whole LR image)
            assert r["tile"] >= max(max(o) for _, o in shapes) and r["lr_tile"] >= max(max(lr) for lr, _ in shapes)
            counts = [_analytic_liif(TINY["c"], TINY["n_res"], TINY["hidden"], lr, out, lr, backend == "torch-ref")
                      for lr, out in shapes]
            backbone, upsampler = (sum(c[i] for c in counts) for i in (0, 1))
            assert (r["flops"]["backbone"], r["flops"]["upsampler"]) == (backbone, upsampler)
            assert r["flops"]["total"] == backbone + upsampler
            achieved = (backbone + upsampler) / r["median_s"] / 1e9
            assert r["gflops_per_s"] == pytest.approx(achieved)
            assert r["gemm_ratio"] == pytest.approx(achieved / peak_gflops)
            assert 0 < r["gemm_ratio"] < 1  # a tiny conv net on one thread is far below the GEMM peak
        # OpenVINO rows: the precision each computed in, and efficiency against that precision's peak
        bf16, default = rows[job, "openvino-bf16"], rows[job, "default"]
        assert (bf16["status"], bf16["precision"], bf16["engine"]) == ("ok", "bf16", "openvino")
        assert bf16["gemm_ratio"] == pytest.approx(bf16["gflops_per_s"] / peaks["bf16"])
        assert bf16["flops"] == rows[job, "onnxruntime"]["flops"]
        # the tiny export has no measured drops, so auto keeps fp32, and says why
        assert (default["engine"], default["precision"]) == ("openvino", "fp32")
        assert "no measured bf16 drop" in default["note"] or "no bf16 units" in default["note"]
        assert default["gemm_ratio"] == pytest.approx(default["gflops_per_s"] / max(peak_gflops, peaks["fp32"]))
        for backend, reason in (("onnxruntime-int8", "--int8-dir"), ("tensorrt", "")):
            assert rows[job, backend]["status"] == "skipped" and reason in rows[job, backend]["note"]
    # the reference path does more arithmetic in the upsampler than the fast one; the backbone is the same
    ref, fast, ort = (rows["40x30@2.5", b]["flops"] for b in ("torch-ref", "torch", "onnxruntime"))
    assert ref["backbone"] == fast["backbone"] and ref["upsampler"] > fast["upsampler"]
    assert ort == fast  # one tile each here, so the same tiles: the export runs the fast model's math


def test_harness_scores_the_protocol_job(report):
    rows = [r for r in report["rows"] if r["job"] == "set5_x4" and r["status"] == "ok"]
    assert [r["backend"] for r in rows] == ["torch-ref", "torch", "onnxruntime", "openvino-bf16", "default"]
    assert all(np.isfinite(r["psnr"]) for r in rows)
    assert rows[0]["psnr_delta"] == 0.0
    assert all(abs(r["psnr_delta"]) < 0.01 for r in rows if r["precision"] == "fp32")  # "unchanged within 0.01 dB"
    assert [r["psnr"] for r in report["rows"] if r["job"] == "40x30@2.5" and r["status"] == "ok"] == [None] * 5


def test_report_files(report, tmp_path):
    json_path, md_path = write_outputs(report, tmp_path / "bench", overwrite=False)
    data = json.loads(json_path.read_text())
    assert data["rows"] == json.loads(json.dumps(report["rows"]))
    for key in ("cpu", "logical_cores", "threads", "torch", "onnxruntime"):
        assert data["machine"][key] not in (None, "")
    assert data["gemm_peak"]["gflops"] > 0
    md = md_path.read_text()
    assert md == to_markdown(report)
    for needle in ("CPU:", "fp32 GEMM peak", "| set5_x4 | onnxruntime |", "peak RSS MiB", "GFLOP bb/up",
                   "% peak", "ΔPSNR", "skipped: no int8 export", "GEMM peaks on OpenVINO", "| openvino-bf16 | bf16 |",
                   "default path (set5_x4): openvino fp32"):
        assert needle in md, needle
    with pytest.raises(Exception, match="already exists"):
        write_outputs(report, tmp_path / "bench", overwrite=False)


def _analytic_liif(c, n_res, hidden, lr_hw, out_hw, window_hw, reference):
    """Multiply-adds x2 of tiny LIIF: EDSR convs per LR px; MLP per query and ensemble member."""
    h, w = lr_hw
    backbone = 2 * h * w * 9 * (3 * c + 2 * n_res * c * c + c * c)
    queries = out_hw[0] * out_hw[1]
    tail = sum(2 * a * b for a, b in zip(hidden, hidden[1:] + [3]))
    if reference:
        per_query = 4 * (2 * (9 * c + 4) * hidden[0] + tail)
        lr_part = 0
    else:  # first layer split: a 1x1 conv on the LR window, the cell term once per call; the
        # separable coordinate terms are element-wise (not counted)
        per_query = 4 * tail
        lr_part = 2 * window_hw[0] * window_hw[1] * 9 * c * hidden[0] + 2 * 2 * hidden[0]
    return backbone, lr_part + queries * per_query


@pytest.mark.parametrize("reference", [False, True])
def test_flops_match_analytic_count(reference):
    c, n_res, hidden = 8, 2, [16, 16]
    model = create("liif", n_resblocks=n_res, n_feats=c, hidden=hidden)
    counter = TileFlopCounter(model.reference() if reference else model)
    whole = counter.image((20, 30), (50, 75), TilePlan(10_000, 10_000, 0))
    expected = _analytic_liif(c, n_res, hidden, (20, 30), (50, 75), (20, 30), reference)
    assert (whole.backbone, whole.upsampler) == expected
    # tiled: the sum over the tiles actually run, halos and LR windows included
    tiled = counter.image((20, 30), (50, 75), TilePlan(16, 8, 0))
    halo = model.descriptor.backbone_halo
    bb = sum(_analytic_liif(c, n_res, hidden, (r.hi - r.lo, q.hi - q.lo), (0, 0), (0, 0), reference)[0]
             for r in lr_spans(20, 8, halo) for q in lr_spans(30, 8, halo))
    up = sum(_analytic_liif(c, n_res, hidden, (0, 0), (len(r.coords), len(q.coords)),
                            (r.lr_hi - r.lr_lo, q.lr_hi - q.lr_lo), reference)[1]
             for r in query_spans(20, 50, 16, 2, 0) for q in query_spans(30, 75, 16, 2, 0))
    assert (tiled.backbone, tiled.upsampler) == (bb, up)
    assert tiled.backbone > whole.backbone and tiled.backbone_tiles == 3 * 4 and tiled.upsampler_tiles == 4 * 5


def _matmul_flops(n: int) -> int:
    """FLOPs of an n x n product as torch's FlopCounterMode counts them (on shapes only)."""
    a = torch.empty(n, n, device="meta")
    with FlopCounterMode(display=False) as counter:
        torch.matmul(a, a)
    return int(counter.get_total_flops())


def test_gemm_flops_match_an_independent_count():
    assert gemm_flops(3) == 54 and gemm_flops(1000) == 2 * 10 ** 9
    for n in (3, 64, 517):
        assert gemm_flops(n) == _matmul_flops(n), n


class _ScriptedClock:
    """A clock that advances only while a product runs, by that product's scripted duration.

    Whatever the harness does around the products (how often it reads the clock, what it sets up)
    costs no time on it, so the measured seconds say exactly which products were timed."""

    def __init__(self, durations: dict[str, list[float]]):
        self.now, self.durations, self.threads = 100.0, {k: list(v) for k, v in durations.items()}, []

    def perf_counter(self) -> float:
        return self.now

    def product(self, library: str) -> None:
        self.now += self.durations[library].pop(0)


def test_gemm_peak_keeps_the_fastest_timed_repeat(monkeypatch):
    """Each library: one untimed warm-up, ``repeats`` timed products, the best kept; GFLOP/s from the
    independent FLOP count; the faster library is the peak; torch runs on the requested threads."""
    import onnxruntime as ort

    import asisr.bench.gemm as gemm_module

    # the warm-up is the fastest product of each library: were it timed, it would be the "best"
    clock = _ScriptedClock({"torch": [1e-6, 0.3, 0.2, 0.1], "onnxruntime": [1e-6, 0.5, 0.05, 0.4]})
    matmul, session_class = torch.matmul, ort.InferenceSession

    def timed_matmul(*args, **kwargs):
        clock.threads.append(torch.get_num_threads())
        clock.product("torch")
        return matmul(*args, **kwargs)

    class TimedSession(session_class):
        def run(self, *args, **kwargs):
            clock.product("onnxruntime")
            return super().run(*args, **kwargs)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(gemm_module.time, "perf_counter", clock.perf_counter)
        monkeypatch.setattr(torch, "matmul", timed_matmul)
        monkeypatch.setattr(ort, "InferenceSession", TimedSession)
        peak = measure_gemm_peak(threads=1, n=64, repeats=3)
        monkeypatch.undo()
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(previous)
    assert clock.durations == {"torch": [], "onnxruntime": []}  # a warm-up and 3 timed products each
    assert clock.threads == [1, 1, 1, 1]
    flops = _matmul_flops(64)
    assert (peak.n, peak.threads, peak.repeats) == (64, 1, 3)
    assert peak.torch_best_seconds == pytest.approx(0.1) and peak.onnxruntime_best_seconds == pytest.approx(0.05)
    assert peak.torch_gflops == pytest.approx(flops / 0.1 / 1e9)
    assert peak.onnxruntime_gflops == pytest.approx(flops / 0.05 / 1e9)
    assert peak.gflops == peak.onnxruntime_gflops


def test_measured_gemm_peak_is_consistent():
    """A real measurement: positive times, and each rate is the FLOP count over its own best time.

    (What the time means is checked on the scripted clock above; a real time is not compared with a
    band, which on a shared machine could fail for the machine's reasons rather than the code's.)"""
    n = 64
    peak = measure_gemm_peak(threads=1, n=n, repeats=3)
    flops = _matmul_flops(n)
    assert peak.torch_best_seconds > 0 and peak.onnxruntime_best_seconds is not None
    assert peak.onnxruntime_best_seconds > 0
    assert peak.torch_gflops * peak.torch_best_seconds * 1e9 == pytest.approx(flops)
    assert peak.onnxruntime_gflops * peak.onnxruntime_best_seconds * 1e9 == pytest.approx(flops)
    assert peak.gflops == max(peak.torch_gflops, peak.onnxruntime_gflops)


def test_rss_sampler_sees_an_allocation():
    """The background thread catches a peak that is gone again before the sampler stops."""
    if not LINUX:
        pytest.skip("the RSS sampler reads /proc/self/status (Linux)")
    assert current_rss() is not None
    size = 96 * 2 ** 20
    with RssSampler(interval=0.001) as s:
        # an anonymous mapping of its own, not malloc: after earlier tests glibc may serve a large
        # block from its heap and keep it on free, so only munmap makes "freed" certain
        block = mmap.mmap(-1, size)
        np.frombuffer(block, dtype=np.uint8)[:] = 1  # touched: every page resident
        deadline = time.perf_counter() + 2.0
        while s.peak - s.start < 80 * 2 ** 20 and time.perf_counter() < deadline:
            time.sleep(0.001)
        block.close()
        after = current_rss()
    assert s.growth >= 80 * 2 ** 20
    assert after < s.peak - 64 * 2 ** 20  # the block was freed: the peak is not the final reading


# ------------------------------------------------------------------------- CLI


def test_bench_cli_end_to_end(tiny_liif_ckpt, tiny_liif_onnx, tmp_path, capsys):
    out = tmp_path / "r"
    code, stdout, err = invoke(bench_main, ["--model", tiny_liif_ckpt, "--onnx-dir", tiny_liif_onnx,
                                            "--jobs", "24x20@3", "--backends", "torch-ref,torch,onnxruntime",
                                            "--repeats", "1", "--threads", "1", "--gemm-size", "64",
                                            "--max-memory", "256M", "--out", out], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["status"] for r in data["rows"]] == ["skipped", "ok", "ok"]  # torch-ref: default --ref-jobs only
    assert "--ref-jobs" in data["rows"][0]["note"]
    assert data["settings"]["max_memory_mib"] == 256 and data["rows"][1]["max_memory_mib"] == 256
    assert (tmp_path / "r.md").is_file() and "wrote" in stdout


def test_bench_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    import asisr.bench.harness as harness

    measured = []
    monkeypatch.setattr(harness, "run_bench", lambda cfg: measured.append(cfg))
    (tmp_path / "r.json").write_text("keep")
    code, _, err = invoke(bench_main, ["--jobs", "24x20@3", "--backends", "torch", "--out", tmp_path / "r"], capsys)
    assert_user_error(code, err, "already exists")
    assert (tmp_path / "r.json").read_text() == "keep" and not (tmp_path / "r.md").exists()
    assert measured == []  # refused before any benchmarking


@pytest.mark.parametrize("args, fragment", [
    (["--max-memory", "lots"], "invalid memory size"),
    (["--max-memory", "-1G"], "greater than 0"),
    (["--max-memory", "2X"], "invalid memory size"),
    (["--jobs", "frame_x9"], "unknown job"),
    (["--backends", "tpu"], "unknown backend"),
    (["--repeats", "0"], "at least 1"),
])
def test_bench_bad_inputs(args, fragment, capsys):
    code, _, err = invoke(bench_main, args, capsys)
    assert_user_error(code, err, fragment)


@pytest.mark.parametrize("value, fragment", [("lots", "invalid memory size"), ("0", "greater than 0"),
                                             ("nanG", "invalid memory size")])
def test_run_bad_max_memory(value, fragment, tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.fromarray(synthetic_frame(12, 16)).save(img)
    code, _, err = invoke(run_main, [img, "--scale", "2", "--out", tmp_path / "o.png", "--max-memory", value], capsys)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "o.png").exists()


def test_run_budget_too_small_for_the_image(tiny_liif_onnx, tmp_path, capsys):
    """An exported model, so the only line is the error (a checkpoint's first run also says it is exporting)."""
    img = tmp_path / "in.png"
    Image.fromarray(synthetic_frame(40, 60)).save(img)
    code, _, err = invoke(run_main, [img, "--scale", "2", "--out", tmp_path / "o.png", "--model", tiny_liif_onnx,
                                     "--max-memory", "1M"], capsys)
    assert_user_error(code, err, "too small")
    assert not (tmp_path / "o.png").exists()


def test_jobs_sizes_and_missing_set5(tmp_path):
    from asisr.bench.jobs import JobSkipped, make_job

    items = {name: make_job(name).items[0] for name in ("frame_x4", "frame_x2", "x3.3")}
    sizes = {name: (item.lr.shape[:2], item.out_hw) for name, item in items.items()}
    assert sizes == {"frame_x4": ((270, 480), (1080, 1920)), "frame_x2": ((1080, 1920), (2160, 3840)),
                     "x3.3": ((360, 640), (1188, 2112))}
    with pytest.raises(JobSkipped, match="--set5"):
        make_job("set5_x4", tmp_path / "absent")
