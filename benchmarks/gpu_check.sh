#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA device (the device tool's, or yours):
# the CUDA tests, then benchmarks/bench_cuda.py. Everything lands in $OUT (default gpu_out/):
# env.txt, cuda_tests.log, bench.log, the table cuda.md (copy it to benchmarks/results/) and
# profile.md (benchmarks/profile_em.py: full float32 and float64 at (1e5, 64, 16)).
# Uses the machine's python3 and its torch (not the pinned CPU wheel); torchgmm's column
# needs torchgmm importable (a folder .devpkgs/ on the path, if present, is added for it).
#   bash benchmarks/gpu_check.sh            # about 6 minutes on an H200
#   BENCH_ARGS='--types full --extras pieces' bash benchmarks/gpu_check.sh   # a part of the table
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: the benchmark runs from benchmarks/
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d .devpkgs ] && export PYTHONPATH="$PWD/.devpkgs:$PYTHONPATH"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import sys, torch, sklearn, numpy, gmmlib; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count(), 'sklearn', sklearn.__version__, 'numpy', numpy.__version__)"
  nproc; uptime
} 2>&1 | tee "$OUT/env.txt"
t0=$SECONDS
timeout 200 "$PY" -m pytest tests/test_cuda.py tests/test_em.py tests/test_mixture.py \
  tests/test_cli_plot.py -k cuda -q -p no:cacheprovider -rs 2>&1 \
  | tee "$OUT/cuda_tests.log"
echo "tests took $((SECONDS - t0)) s" | tee -a "$OUT/cuda_tests.log"
t0=$SECONDS
(cd benchmarks && timeout 300 "$PY" bench_cuda.py --out "$OUT/cuda.md" ${BENCH_ARGS:-}) 2>&1 | tee "$OUT/bench.log"
echo "benchmark took $((SECONDS - t0)) s" | tee -a "$OUT/bench.log"
t0=$SECONDS  # where the GPU time goes at the row still behind torchgmm (results/cuda.md)
(cd benchmarks && timeout 90 "$PY" profile_em.py --size 1e5,64,16 --out "$OUT/profile.md") 2>&1 | tee "$OUT/profile.log"
echo "profile took $((SECONDS - t0)) s" | tee -a "$OUT/profile.log"
