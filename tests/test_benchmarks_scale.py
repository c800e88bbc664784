"""bench_scale.py and bench_distributed.py still run against the current API (smoke tests at tiny
sizes: the tables have their rows and columns and finite numbers; no timing is asserted)."""
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_scale  # noqa: E402


def cells(line: str) -> list:
    return [c.strip() for c in line.split("|")[1:-1]]


def first_number(cell: str) -> float:
    """'0.0123', '0.01–0.02', '1.5x', '3.1e-15 (ranks ...)' -> the first number."""
    return float(cell.split()[0].split("–")[0].rstrip("x"))


def test_blob_stream_is_deterministic_and_shards_add_up():
    s = bench_scale.BlobStream(3000, batch=1024)
    X = s.tensor()
    assert X.shape == (3000, bench_scale.D) and torch.isfinite(X).all()
    assert torch.equal(s.tensor(), X)  # every pass yields the same rows
    parts = [s.shard(r, 2).tensor() for r in range(2)]
    assert [len(p) for p in parts] == [1500, 1500] and torch.equal(torch.cat(parts), X)


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_bench_scale_writes_a_table(tmp_path, restore_threads):
    """One streamed cell through main (its own worker process, as in the full run), and the
    in-memory cell measured in this process (a second worker would double the test's time)."""
    out = tmp_path / "scale.md"
    results = bench_scale.main(["--sizes", "2e3", "--types", "full", "--threads", "1",
                                "--tensor-n", "0", "--out", str(out)])
    tensor = bench_scale.measure(2000, "full", "tensor", threads=1, iters=2)
    results.append([dict(tensor, load=0.0)])
    text = out.read_text()
    assert "Load average" in text
    header = cells(next(line for line in text.splitlines() if line.startswith("| N")))
    rows = [cells(line) for line in bench_scale.table(results) if line.startswith("| 2e3")]
    assert [cells(line) for line in text.splitlines() if line.startswith("| 2e3")] == rows[:1]
    assert [(r[1], r[2], r[3]) for r in rows] == [("stream", "full", "1"), ("tensor", "full", "1")]
    assert len(header) == 11 and all(len(r) == 11 for r in rows)
    for r in rows:
        assert first_number(r[5]) > 0 and math.isfinite(first_number(r[7]))  # s/it, per 1e6
        assert math.isfinite(first_number(r[8])) and first_number(r[10]) >= 0  # MB, load
    assert first_number(rows[0][6]) > 0 and rows[1][6].startswith("—")  # loader: streams only


def test_bench_distributed_writes_a_table(tmp_path, restore_threads):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    import bench_distributed
    out = tmp_path / "distributed.md"
    bench_distributed.main(["--n", "3e3", "--iters", "2", "--repeat", "1", "--dtypes", "float64",
                            "--out", str(out)])
    rows = [cells(line) for line in out.read_text().splitlines() if line.startswith("| 3e3")]
    assert [r[2] for r in rows] == ["1 x 1 thread", "1 x 2 threads", "2 x 1 thread (gloo)"]
    assert all(len(r) == 8 and r[1] == "float64" for r in rows)
    assert all(first_number(r[i]) > 0 for r in rows for i in (3, 4, 5))
    # the 2-process fit is the single-process fit of the union, to rounding
    assert first_number(rows[2][6]) < 1e-8 and first_number(rows[1][6]) < 1e-8
