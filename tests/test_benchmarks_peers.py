"""bench_em.py --peers without the peers (a smoke test: tiny sizes, no assertion on any timing).

pomegranate and torchgmm live only in the benchmark's own venv (`make bench-peers` builds
.venv-peers); in the main venv they are missing, and the peer columns must be left out cleanly:
exit 0, a note saying why, and the scikit-learn table as before.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("pomegranate", "torchgmm")


def _missing(name):
    return importlib.util.find_spec(name) is None


@pytest.mark.skipif(not all(_missing(name) for name in PEERS),
                    reason="a peer is installed here; this test is for an environment without them")
def test_peers_flag_without_the_peers_leaves_their_columns_out(tmp_path):
    out = tmp_path / "em_peers.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_em.py"), "--peers",
                        "--sizes", "2e3,2,3", "--types", "full", "tied", "shared_isotropic",
                        "--iters", "2", "--repeat", "1", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in PEERS:  # says which peer is missing and how to get it
        assert f"{name} is not importable" in r.stderr and "make bench-peers" in r.stderr
    text = out.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| N |"))
    assert not any(name in header for name in PEERS)
    assert "Not importable, left out: pomegranate, torchgmm." in text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 2e3")]
    assert [row[3].strip() for row in rows] == ["full", "tied", "shared_isotropic"]
    assert all(row[4].strip() == "float32" for row in rows)  # --peers: the peers' dtype
    assert all(len(row) == len(header.split("|")[1:-1]) for row in rows)
    for row in rows[:2]:  # scikit-learn has these two: a positive ratio
        assert float(row[7].strip().strip("*x")) > 0
    assert rows[2][6].strip() == "—"


def test_load_peers_reports_what_is_missing():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_em
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    found, missing = bench_em.load_peers()
    assert set(found) | set(missing) == set(PEERS) and not set(found) & set(missing)
    for name in PEERS:
        assert (name in missing) == _missing(name)
    for why in missing.values():
        assert "Error" in why  # the exception's name, e.g. ModuleNotFoundError: ...
