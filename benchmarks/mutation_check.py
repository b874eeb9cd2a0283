"""Can the sharpened tests fail? Each is run against a copy of the checkout with one deliberate defect.

Why: a test that passes whatever the code does checks nothing. For each test that issue 25
rewrote, this script copies the checkout to a temporary folder, breaks the code there in the way
the test claims to catch (a string replacement in one file, listed below), runs that test on the
copy, and prints whether it failed, as it must. The checkout itself is never changed.

    python benchmarks/mutation_check.py            # every mutation
    python benchmarks/mutation_check.py --only digest,gemm
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    test: str  # a pytest node id (or -k expression after "::-k ")
    what: str


MUTATIONS = [
    Mutation("scale-folded", "export/onnx.py",
             "    program.save(str(path))\n",
             "    program.save(str(path))\n"
             "    if stage.filename.startswith('upsampler'):  # MUTATION: re-export with the scale baked in\n"
             "        fixed = args[1]\n"
             "        class _Folded(torch.nn.Module):\n"
             "            def __init__(self, m):\n"
             "                super().__init__(); self.m = m\n"
             "            def forward(self, f, s, r, c):\n"
             "                return self.m(f, fixed + 0 * s.sum(), r, c)\n"
             "        torch.onnx.export(_Folded(module), args, str(path), dynamo=True, opset_version=opset,\n"
             "                          input_names=list(stage.input_names), output_names=list(stage.output_names),\n"
             "                          dynamic_shapes=_dims(stage), optimize=False).save(str(path))\n",
             "tests/test_export_onnx.py::test_the_scale_is_data_in_every_stage_that_reads_it",
             "the upsampler graph holds the traced x2 as a constant (the input kept, its value unused)"),
    Mutation("scale-unread-backbone", "models/eqsr_light.py",
             "    def forward(self, lr: torch.Tensor, scale: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:\n",
             "    def forward(self, lr: torch.Tensor, scale: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:\n"
             "        scale = torch.full_like(scale, 2.0)  # MUTATION: the backbone ignores the scale it is told\n",
             "tests/test_export_onnx.py::test_the_scale_is_data_in_every_stage_that_reads_it",
             "EQSR's backbone modulated by a fixed x2 whatever the input says"),
    Mutation("digest-unsorted", "runtime/backends/trt/engine_cache.py",
             "json.dumps(self.to_dict(), sort_keys=True, separators=(\",\", \":\"))",
             "json.dumps(self.to_dict(), separators=(\",\", \":\"))",
             "tests/test_tensorrt.py::test_engine_key_digest_is_the_sha256_of_the_canonical_text",
             "the engine key's JSON not canonical (keys in field order)"),
    Mutation("digest-spaces", "runtime/backends/trt/engine_cache.py",
             "json.dumps(self.to_dict(), sort_keys=True, separators=(\",\", \":\"))",
             "json.dumps(self.to_dict(), sort_keys=True)",
             "tests/test_tensorrt.py::test_engine_key_digest_is_the_sha256_of_the_canonical_text",
             "the engine key's JSON with default separators (old caches no longer found)"),
    Mutation("gemm-times-warmup", "bench/gemm.py",
             "    run()  # warm-up: thread pool, page faults on the output\n    best = float(\"inf\")\n",
             "    best = float(\"inf\")  # MUTATION: no untimed warm-up\n",
             "tests/test_bench.py::test_gemm_peak_keeps_the_fastest_timed_repeat",
             "the GEMM yardstick without its untimed warm-up"),
    Mutation("gemm-last-not-best", "bench/gemm.py",
             "        best = min(best, time.perf_counter() - t0)\n",
             "        best = time.perf_counter() - t0  # MUTATION: the last repeat, not the best\n",
             "tests/test_bench.py::test_gemm_peak_keeps_the_fastest_timed_repeat",
             "the GEMM yardstick keeps the last repeat"),
    Mutation("gemm-wrong-threads", "bench/gemm.py",
             "    torch.set_num_threads(threads)\n",
             "    torch.set_num_threads(threads + 1)  # MUTATION\n",
             "tests/test_bench.py::test_gemm_peak_keeps_the_fastest_timed_repeat",
             "torch's products on another thread count than asked"),
    Mutation("gemm-units", "bench/gemm.py",
             "    torch_gflops = flops / t_torch / 1e9\n",
             "    torch_gflops = flops / t_torch / 1e6  # MUTATION: MFLOP/s called GFLOP/s\n",
             "tests/test_bench.py::test_measured_gemm_peak_is_consistent",
             "wrong units on a real measurement"),
    Mutation("bench-overwrite-late", "asisr/cli/bench.py",
             "        check_outputs(out, overwrite)  # before minutes of work, not after\n",
             "        pass  # MUTATION: the outputs are checked only when written\n",
             "tests/test_bench.py::test_bench_refuses_to_overwrite",
             "asisr-bench measures before it finds that --out exists"),
    Mutation("export-keeps-trace-notes", "export/onnx.py",
             "    _strip_trace_metadata(model)\n",
             "    pass  # MUTATION: trace notes (with object addresses) kept\n",
             "tests/test_export_onnx.py::test_export_is_byte_deterministic",
             "the exporter's trace notes kept in the graph"),
]


def run_one(m: Mutation, work: Path, python: str) -> tuple[bool, float, str]:
    copy = work / m.name
    shutil.copytree(REPO, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist"))
    target = copy / m.file
    text = target.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"{m.name}: the text to replace is not in {m.file} exactly once (the code moved on?)")
    target.write_text(text.replace(m.old, m.new))
    started = time.perf_counter()
    run = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly",
                          "-n", "0", "-m", "slow or not slow", m.test], cwd=copy, capture_output=True, text=True)
    last = (run.stdout.strip().splitlines() or [""])[-1]
    shutil.rmtree(copy, ignore_errors=True)
    return run.returncode == 1, time.perf_counter() - started, last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated mutation names")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only.split(",")]
    print(f"{'mutation':26} {'test':70} {'result':14} seconds")
    caught_all = True
    with tempfile.TemporaryDirectory() as tmp:
        for m in chosen:
            caught, seconds, last = run_one(m, Path(tmp), sys.executable)
            caught_all &= caught
            print(f"{m.name:26} {m.test.split('::', 1)[1][:70]:70} {'FAILED (good)' if caught else 'PASSED (bad)':14} "
                  f"{seconds:5.1f}  [{last}]", flush=True)
    return 0 if caught_all else 1


if __name__ == "__main__":
    sys.exit(main())
