"""Where an EM iteration's time goes: torch.profiler over ``fit_em`` at one size, per dtype.

Prints, per dtype, the operators by their own time on the device (on a GPU: kernel time;
on the CPU: CPU time), and per iteration the number of operator calls, of device kernels and
of host-device synchronisations (``aten::_local_scalar_dense``, ``aten::nonzero``), each the
difference between a fit of ``--iters`` + 1 iterations and one of 1, divided by ``--iters``,
so set-up and the final pass do not count. Written for the question session 15's GPU run
left open (full float32 slower than float64 on an H200, ``results/cuda.md``).

    python benchmarks/profile_em.py --device cuda --size 1e6,16,16 --family full --out prof.md
    python benchmarks/profile_em.py --device cpu --size 2e3,2,3     # the code path, no GPU
"""
import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import gmmlib
from _report import publish
from bench_em import _cast, _size, make_data, start
from gmmlib.em import fit_em

SYNCS = ("aten::_local_scalar_dense", "aten::nonzero")


def profiled(model0, X, iters, device):
    """The profiler's events of one fit of ``iters`` iterations (tol=0) from ``model0``."""
    model = gmmlib.GaussianMixture(model0.n_components, model0.n_features, model0.family.name,
                                   dtype=X.dtype, device=device)
    model.load_state_dict(model0.state_dict())
    gpu = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        fit_em(model, X, init=None, max_iter=iters, tol=0.0, progress=False)
        if gpu:
            torch.cuda.synchronize()
    return prof


def counts(prof, gpu: bool) -> dict:
    averages = prof.key_averages()
    ops = {e.key: e.count for e in averages}
    busy = sum(e.self_device_time_total if gpu else e.self_cpu_time_total for e in averages)
    kernels = sum(e.count for e in prof.events()
                  if gpu and e.device_type == torch.autograd.DeviceType.CUDA)
    return {"operator calls": sum(ops.values()), "device kernels": kernels,
            "synchronisations": sum(ops.get(k, 0) for k in SYNCS),
            ("device" if gpu else "CPU") + " µs busy": busy}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=_size, default=(1_000_000, 16, 16), metavar="N,D,K")
    ap.add_argument("--family", default="full")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--rows", type=int, default=25, help="operators listed per dtype")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = args.device
    gpu = torch.device(dev).type == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("profile_em.py: no CUDA device here; --device cpu profiles on the CPU")
    warnings.filterwarnings("ignore", category=gmmlib.ConvergenceWarning)
    N, D, K = args.size
    X64 = make_data(N, D, K)
    model0 = start(X64, K, args.family)
    lines = [f"# Profile of fit_em: ({N}, {D}, {K}) {args.family} on {dev}", "",
             f"torch {torch.__version__}" + (f" · {torch.cuda.get_device_name()}" if gpu else ""), ""]
    sort = "self_device_time_total" if gpu else "self_cpu_time_total"
    for dname in args.dtypes:
        dtype = getattr(torch, dname)
        X = torch.as_tensor(X64, dtype=dtype, device=dev)
        m0 = model0 if dtype == torch.float64 else _cast(model0, dtype)
        profiled(m0, X, 1, dev)  # warm: the allocator, the libraries' handles
        one, many = profiled(m0, X, 1, dev), profiled(m0, X, args.iters + 1, dev)
        c1, cn = counts(one, gpu), counts(many, gpu)
        per_it = {k: (cn[k] - c1[k]) / args.iters for k in c1}
        lines += [f"## {dname}", "", "Per iteration: " + ", ".join(f"{v:.0f} {k}" for k, v in per_it.items()), "",
                  "```", many.key_averages().table(sort_by=sort, row_limit=args.rows), "```", ""]
        print(f"{dname}: " + ", ".join(f"{v:.0f} {k}" for k, v in per_it.items()), flush=True)
    publish("\n".join(lines), Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
