"""The benchmark scripts still run against the current API (a smoke test: tiny sizes, and no
assertion on any timing; speed is judged from their tables, not here)."""
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def test_bench_em_writes_a_table(tmp_path):
    out = tmp_path / "em.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_em.py"), "--sizes", "2e3,2,3",
                        "--types", "full", "diagonal", "shared_isotropic", "--dtypes", "float64",
                        "--iters", "2", "--repeat", "1", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| 2e3")]
    assert [row[3].strip() for row in rows] == ["full", "diagonal", "shared_isotropic"]
    for row in rows[:2]:  # scikit-learn has these two: a positive ratio
        assert float(row[7].strip().strip("*x")) > 0
    assert rows[2][6].strip() == "—"  # and not this one
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_em.py"), "--sizes", "1e3,2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "N,D,K" in bad.stderr


def test_bench_floor_prints_a_row(tmp_path):
    out = tmp_path / "floor.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_floor.py"), "--quick",
                        "--rounds", "1", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    row = [line for line in out.read_text().splitlines() if line.startswith("| gd")]
    assert len(row) == 1 and float(row[0].split("|")[6].split()[0]) > 0


def test_bench_contention_writes_a_table(tmp_path):
    """Smoke test: one tiny size, no load and one busy process, one round; the table has a row
    for each, the policy never went above the entry count, and the ratio is positive (no timing
    is asserted)."""
    out = tmp_path / "contention.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_contention.py"), "--sizes",
                        "2e3,2,3", "--loads", "0", "1", "--threads", "1", "--iters", "1",
                        "--repeat", "1", "--rounds", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if "2e+03" in line]
    assert [row[0].strip() for row in rows] == ["0", "1"]
    assert [row[3].strip() for row in rows] == ["1", "1"]  # threads the policy chose
    assert all(float(row[6].strip().rstrip("x")) > 0 for row in rows)
    assert all(float(row[9].strip()) > 0 for row in rows)  # gmmlib on 1 thread, s/iter
    assert rows[0][10].strip() == "1.00x"  # its slowdown: against itself with no load
    assert float(rows[1][10].strip().rstrip("x")) > 0  # its slowdown under 1 busy process


def test_bench_cuda_runs_its_code_path_on_the_cpu(tmp_path):
    """bench_cuda.py's own code (the rows, PyCave's case, the stream) with the device side on
    the CPU: the GPU run is a scarce lease, so a broken script must show up here first. Both
    sides on one device do the same arithmetic, so their means agree closely."""
    out = tmp_path / "cuda.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cuda.py"), "--device", "cpu",
                        "--sizes", "2e3,2,3", "--types", "full", "diagonal", "--dtypes", "float64",
                        "--iters", "2", "--repeat", "1", "--threads", "1", "--pycave-rows", "2000",
                        "--pycave-iters", "2", "--stream-rows", "20000", "--ab-sizes", "2e3,4,3", "2e3,6,3",
                        "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 2e3")]
    assert [row[3].strip() for row in rows] == ["full", "diagonal"]
    assert all(float(row[-1]) < 1e-10 for row in rows)  # Δmeans device vs CPU
    assert "PyCave's case, [2e3, 64] -> 64 diagonal" in text and "Streamed: [2e4, 8]" in text
    ab = re.search(r"\(2e3, 4, 3\) ([0-9.]+) against ([0-9.]+) s/it", text)
    assert ab and float(ab[1]) > 0 and float(ab[2]) > 0  # full float32's two M-step rules
    pieces = re.findall(r"Full (float32|float64) where D \+ 1 > 2K.*?\(2e3, 6, 3\) ([0-9.]+) "
                        r"against ([0-9.]+) against ([0-9.]+) s/it", text)
    assert [p[0] for p in pieces] == ["float32", "float64"]  # the centred products in pieces
    assert all(float(t) > 0 for p in pieces for t in p[1:])
    rules = next(line for line in text.splitlines() if "the CPU's), best of" in line)
    assert "(2e3, 6, 3)" not in rules  # compared only where the two rules differ
    assert "Partial" not in text
    assert text.startswith("# EM on a GPU: gmmlib.fit_em on none (CPU)")  # not an extra's name
    if not torch.cuda.is_available():  # asked for the GPU where there is none: says so
        no_gpu = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cuda.py")],
                                capture_output=True, text=True, timeout=120)
        assert no_gpu.returncode == 1 and "--device cpu" in no_gpu.stderr


def test_profile_em_runs_its_code_path_on_the_cpu(tmp_path):
    """profile_em.py (run after bench_cuda.py on a GPU) on the CPU: per-iteration counts of
    operator calls are positive and its table lists operators."""
    out = tmp_path / "profile.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_em.py"), "--device", "cpu",
                        "--size", "2e3,2,3", "--iters", "2", "--rows", "5", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    counts = [line for line in text.splitlines() if line.startswith("Per iteration: ")]
    assert len(counts) == 2 and all(int(c.split()[2]) > 50 for c in counts)  # operator calls
    assert text.count("aten::") >= 10
