"""asisr-bench: the harness end to end on tiny jobs, FLOP counting, the GEMM yardstick, the
RSS sampler, and the CLI's input checks. No timing assertions: only that numbers exist and add up."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

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
                      backends=["torch-ref", "torch", "onnxruntime", "onnxruntime-int8", "tensorrt"],
                      threads=1, repeats=1, ref_jobs=None, gemm_n=64)
    return run_bench(cfg)


def test_harness_rows_have_every_field(report):
    rows = {(r["job"], r["backend"]): r for r in report["rows"]}
    assert len(rows) == 10
    for job in ("set5_x4", "40x30@2.5"):
        for backend in ("torch-ref", "torch", "onnxruntime"):
            r = rows[job, backend]
            assert r["status"] == "ok", r
            for f in ROW_FIELDS:
                assert f in r, f
            assert len(r["seconds"]) == 1 and r["median_s"] > 0 and r["mpx_per_s"] > 0
            assert r["peak_rss_mib"] is None or r["peak_rss_mib"] >= r["rss_start_mib"] > 0
            assert r["flops"]["backbone"] > 0 and r["flops"]["upsampler"] > 0
            assert r["gemm_ratio"] == pytest.approx(r["gflops_per_s"] / report["gemm_peak"]["gflops"])
        for backend, reason in (("onnxruntime-int8", "--int8-dir"), ("tensorrt", "")):
            assert rows[job, backend]["status"] == "skipped" and reason in rows[job, backend]["note"]
    # the reference path does more arithmetic in the upsampler than the fast one; the backbone is the same
    ref, fast, ort = (rows["40x30@2.5", b]["flops"] for b in ("torch-ref", "torch", "onnxruntime"))
    assert ref["backbone"] == fast["backbone"] and ref["upsampler"] > fast["upsampler"]
    assert ort == fast  # one tile each here, so the same tiles: the export runs the fast model's math


def test_harness_scores_the_protocol_job(report):
    rows = [r for r in report["rows"] if r["job"] == "set5_x4" and r["status"] == "ok"]
    assert [r["backend"] for r in rows] == ["torch-ref", "torch", "onnxruntime"]
    assert all(np.isfinite(r["psnr"]) for r in rows)
    assert rows[0]["psnr_delta"] == 0.0
    assert all(abs(r["psnr_delta"]) < 0.01 for r in rows)  # "PSNR unchanged within 0.01 dB"
    assert [r["psnr"] for r in report["rows"] if r["job"] == "40x30@2.5" and r["status"] == "ok"] == [None] * 3


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
                   "% GEMM peak", "ΔPSNR", "skipped: no int8 export"):
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


def test_gemm_peak():
    assert gemm_flops(3) == 54 and gemm_flops(1000) == 2 * 10 ** 9
    threads = torch.get_num_threads()
    peak = measure_gemm_peak(threads=1, n=64, repeats=2)
    assert peak.torch_gflops > 0 and peak.onnxruntime_gflops > 0 and peak.n == 64 and peak.threads == 1
    assert peak.torch_gflops == pytest.approx(2 * 64 ** 3 / peak.torch_best_seconds / 1e9)
    assert peak.onnxruntime_gflops == pytest.approx(2 * 64 ** 3 / peak.onnxruntime_best_seconds / 1e9)
    assert peak.gflops == max(peak.torch_gflops, peak.onnxruntime_gflops)
    assert torch.get_num_threads() == threads  # restored


def test_rss_sampler_sees_an_allocation():
    if current_rss() is None:
        pytest.skip("no /proc/self/status on this platform")
    with RssSampler(interval=0.001) as s:
        block = np.ones(96 * 2 ** 20 // 8)  # 96 MiB, touched
        time.sleep(0.01)
    assert s.growth >= 80 * 2 ** 20
    del block


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


def test_bench_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "r.json").write_text("keep")
    start = time.perf_counter()
    code, _, err = invoke(bench_main, ["--jobs", "24x20@3", "--backends", "torch", "--out", tmp_path / "r"], capsys)
    assert_user_error(code, err, "already exists")
    assert (tmp_path / "r.json").read_text() == "keep" and not (tmp_path / "r.md").exists()
    assert time.perf_counter() - start < 5  # refused before any benchmarking


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


def test_run_budget_too_small_for_the_image(tiny_liif_ckpt, tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.fromarray(synthetic_frame(40, 60)).save(img)
    code, _, err = invoke(run_main, [img, "--scale", "2", "--out", tmp_path / "o.png", "--model", tiny_liif_ckpt,
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
