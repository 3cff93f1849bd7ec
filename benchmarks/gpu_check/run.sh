#!/bin/bash
# GPU checks of hpc_hpo on a machine with one NVIDIA GPU, PyTorch, h5py and an MPI (TensorFlow
# is not needed: the trials are PyTorch, so the check runs on images that only carry PyTorch).
# What it checks: GPU discovery, the binding each trial sees (workers_per_gpu = 2, 4 workers on
# 1 GPU, CPU with CUDA_VISIBLE_DEVICES=-1), GPU memory of trial processes over 20 trials with a
# replacement after 10, gpus_per_trial = 2 on a 1-GPU node (exit 2), GPU vs CPU trial times,
# and the binding tests on a machine with a real /proc/driver/nvidia.
#   bash benchmarks/gpu_check/run.sh            # logs and CSVs into $OUT (default /tmp/gpu_check)
#   python benchmarks/gpu_check/summary.py DIR  # the tables
# Wheels for packages missing there (mpi4py) may be put in benchmarks/gpu_check/whl/.
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/gpu_check}; W=/tmp/gpu_check_work; rm -rf $W; mkdir -p $W $OUT
trap 'cp $W/* $OUT/ 2>/dev/null; tar czf $OUT/all.tgz -C $W .' EXIT
if ls whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --target /tmp/site whl/*.whl || exit 9
fi
export PATH=$(dirname $(which python3)):$PATH PYTHONPATH=/tmp/site:$PWD/../.. OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
PY=$(which python3)
M="mpirun --oversubscribe --bind-to none"
nvidia-smi -L; nproc
python -c "import mpi4py.MPI as M, torch, h5py; print(M.Get_library_version().splitlines()[0], torch.__version__, h5py.__version__)"
python -c "from hpc_hpo import devices; print('discover:', devices.discover_gpus())"
mark() { echo "MARK,$(date +%s.%N),$1" >> $W/gpumem.csv; }
(while true; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits | sed "s/^/$(date +%s.%N),/" >> $W/gpumem.csv; sleep 0.5; done) &
S=$!
run() { local name=$1; shift; mark $name; local t0=$(date +%s.%N); timeout 240 "$@" > $W/$name.log 2>&1; local rc=$?; echo "== $name rc=$rc wall=$(awk "BEGIN{print $(date +%s.%N) - $t0}")s"; tail -4 $W/$name.log; }
run share $M -n 3 $PY -m hpc_hpo run share.toml
run mem $M -n 2 $PY -m hpc_hpo run mem.toml
run timing_gpu $M -n 2 $PY -m hpc_hpo run timing.toml
sed 's/results = "timing.h5"/results = "timing_cpu.h5"/' timing.toml > timing_cpu.toml
run timing_cpu env CUDA_VISIBLE_DEVICES=-1 $M -n 2 $PY -m hpc_hpo run timing_cpu.toml
run group $M -n 3 $PY -m hpc_hpo run group.toml
run bayes $M -n 5 $PY -m hpc_hpo run bayes.toml
mark end; kill $S
for f in share mem timing timing_cpu bayes; do python -m hpc_hpo export $f.h5 -o $W/$f.csv 2>&1 | tail -1; done
python -m hpc_hpo status share.h5 > $W/status_share.txt 2>&1
grep -h "devices:" $W/*.log | sort | uniq
python summary.py $W
cd ../..; timeout 300 python -m pytest -q -x -p no:cacheprovider tests/trials/test_devices.py tests/trials/test_workers_mpi.py tests/trials/test_executor.py > $W/pytest.log 2>&1; echo "pytest rc=$?"; tail -3 $W/pytest.log
