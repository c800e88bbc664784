"""The per-fit thread policy (gmmlib._threads): what it sets, that it always restores, and how it
reads the machine's load. No timing is asserted; the speed it buys is measured in
benchmarks/results/contention.md."""
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from gmmlib import _threads
from gmmlib._threads import MIN_PARALLEL_WORK, choose_threads, fit_threads

BIG = 1e9  # work per iteration well above MIN_PARALLEL_WORK
SMALL = MIN_PARALLEL_WORK / 10
LINUX_PROC = os.path.exists("/proc/loadavg") and os.path.isdir("/proc/self/task")


@pytest.fixture
def entry_threads():
    """torch at 4 threads for the test (more than the policy will choose when it cuts)."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield 4
    torch.set_num_threads(before)


@pytest.fixture
def machine(monkeypatch):
    """A machine with 8 allowed cores; ``machine(n)`` makes n other tasks runnable (None: /proc
    unreadable)."""
    monkeypatch.setattr(_threads, "_allowed_cores", lambda: 8)

    def set_others(n):
        monkeypatch.setattr(_threads, "_running_elsewhere", lambda: n)
    set_others(0)
    return set_others


def test_restored_after_the_block(entry_threads, machine):
    with fit_threads(SMALL) as n:
        inside = torch.get_num_threads()
    assert n == inside == 1 != entry_threads
    assert torch.get_num_threads() == entry_threads


def test_restored_after_an_exception(entry_threads, machine):
    inside = []
    with pytest.raises(RuntimeError, match="boom"):
        with fit_threads(SMALL):
            inside.append(torch.get_num_threads())
            raise RuntimeError("boom")
    assert inside == [1]
    assert torch.get_num_threads() == entry_threads


def test_never_above_the_entry_count(entry_threads, machine):
    with fit_threads(BIG) as n:  # 8 idle cores, but the user asked for 4
        assert n == torch.get_num_threads() == entry_threads
    torch.set_num_threads(1)
    with fit_threads(BIG) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 1


def test_small_work_gets_one_thread_large_work_keeps_all(entry_threads, machine):
    assert choose_threads(SMALL) == 1
    assert choose_threads(MIN_PARALLEL_WORK * 0.99) == 1
    assert choose_threads(MIN_PARALLEL_WORK) == entry_threads
    assert choose_threads(BIG) == entry_threads


@pytest.mark.parametrize("others, expected", [(0, 4), (5, 3), (6, 2), (7, 1), (8, 1), (50, 1)])
def test_busy_cores_lower_the_count(entry_threads, machine, others, expected):
    machine(others)
    with fit_threads(BIG) as n:
        assert n == torch.get_num_threads() == expected
    assert torch.get_num_threads() == entry_threads


def test_affinity_caps_the_count(entry_threads, monkeypatch):
    monkeypatch.setattr(_threads, "_running_elsewhere", lambda: 0)
    monkeypatch.setattr(_threads, "_allowed_cores", lambda: 2)
    assert choose_threads(BIG) == 2
    if hasattr(os, "sched_getaffinity"):  # the real reader counts the mask, not the machine
        monkeypatch.undo()
        monkeypatch.setattr(_threads, "_running_elsewhere", lambda: 0)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
        assert _threads._allowed_cores() == 3
        assert choose_threads(BIG) == 3


def test_nested_fits_keep_the_outer_choice(entry_threads, machine):
    machine(6)  # 2 cores free
    with fit_threads(BIG) as outer:
        with fit_threads(BIG) as inner:
            assert inner == outer == 2
        with fit_threads(SMALL) as inner:
            assert inner == torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == entry_threads


@pytest.mark.parametrize("work", [-1.0, math.nan])
def test_bad_work_is_refused(work):
    with pytest.raises(ValueError, match="work"):
        with fit_threads(work):
            pass


def _fake_proc(monkeypatch, loadavg, own_states):
    """/proc/loadavg reads ``loadavg``; each of this process's threads reads a stat line whose
    state is the next of ``own_states`` (a command name with ') R (' in it tries the parser)."""
    tids = [str(100 + i) for i in range(len(own_states))]
    files = {"/proc/loadavg": loadavg}
    files.update({f"/proc/self/task/{t}/stat": f"{t} (we) R (odd) {s} 1 1 0".encode()
                  for t, s in zip(tids, own_states)})

    def read(path):
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]
    monkeypatch.setattr(_threads, "_read", read)
    monkeypatch.setattr(_threads.os, "listdir", lambda path: list(tids))


@pytest.mark.parametrize("running, own_states, expected", [
    (1, "RS", 0),     # only the reader runs
    (3, "RS", 2),     # two tasks besides our one running thread
    (3, "RRS", 1),    # an OpenMP worker still spinning is ours, not another job
    (2, "SS", 1),     # our states changed between the reads: count the reader anyway
])
def test_proc_loadavg_is_read_without_our_own_threads(monkeypatch, running, own_states, expected):
    _fake_proc(monkeypatch, f"0.50 0.40 0.30 {running}/120 4242\n".encode(), own_states)
    assert _threads._running_elsewhere() == expected


def test_busy_signal_from_proc_drops_the_count(entry_threads, monkeypatch):
    monkeypatch.setattr(_threads, "_allowed_cores", lambda: 4)
    _fake_proc(monkeypatch, b"3.00 3.00 3.00 4/120 4242\n", "RS")  # 3 others on 4 cores
    with fit_threads(BIG) as n:
        assert n == torch.get_num_threads() == 1
    _fake_proc(monkeypatch, b"0.00 0.00 0.00 1/120 4242\n", "RS")  # idle
    with fit_threads(BIG) as n:
        assert n == torch.get_num_threads() == 4
    assert torch.get_num_threads() == entry_threads


@pytest.mark.parametrize("content", [None, b"", b"garbage\n", b"0.1 0.1 0.1 x/y 1\n"])
def test_unreadable_proc_leaves_the_count_to_the_other_rules(entry_threads, monkeypatch, content):
    def read(path):
        if content is None:
            raise FileNotFoundError(path)
        return content
    monkeypatch.setattr(_threads, "_read", read)
    monkeypatch.setattr(_threads, "_allowed_cores", lambda: 8)
    assert _threads._running_elsewhere() is None
    with fit_threads(BIG) as n:
        assert n == torch.get_num_threads() == entry_threads
    with fit_threads(SMALL) as n:
        assert n == 1
    assert torch.get_num_threads() == entry_threads


def test_no_affinity_no_proc(entry_threads, monkeypatch):
    """As on macOS or Windows: no sched_getaffinity, no /proc."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(_threads, "_read", lambda path: (_ for _ in ()).throw(FileNotFoundError(path)))
    assert _threads._allowed_cores() == 2
    with fit_threads(BIG) as n:
        assert n == torch.get_num_threads() == 2
    assert torch.get_num_threads() == entry_threads


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc")
def test_a_real_busy_process_is_seen(entry_threads, monkeypatch):
    """End to end on the real /proc: a child spinning on a core is counted (it is runnable the
    whole time, whether or not it is on a core), and the policy gives it that core."""
    assert isinstance(_threads._running_elsewhere(), int)
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline, seen = time.monotonic() + 30, 0
        while seen < 1 and time.monotonic() < deadline:  # until the child is up and spinning
            seen = _threads._running_elsewhere()
            time.sleep(0.05)
        assert seen >= 1
        monkeypatch.setattr(_threads, "_allowed_cores", lambda: 2)  # the child holds one of two
        with fit_threads(BIG) as n:
            assert n == torch.get_num_threads() == 1
    finally:
        child.kill()
        child.wait()
    assert torch.get_num_threads() == entry_threads
