#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md ("The paper profile on one GPU") in one time-boxed run,
# for a session that holds a GPU machine for minutes, not hours:
#
#   1. bench_profile_time.py --profile paper --chapters 03 04 05: chapters 2-5 cold, twice, at two
#      short fractions of the paper's lengths, each chapter's time extrapolated to the full length;
#   2. bench_saes.py --device cuda: the 12 SAEs of a base model stacked vs separate at batch 64 and
#      1024, the equality check, and one SAE against plain sae-lens;
#   3. chapter 6 added to the kept samples of step 1 (--reuse), while time is left: its probes are
#      XGBoost on the CPU cores whatever the device.
#
# A chapter failing in step 1 ends the run (exit status 1). Each step gets what is left of the budget (the last one is cut at the deadline; what the earlier
# ones printed stays). Everything lands in OUT_DIR, five files: machine.txt (the card, the machine,
# each step's exit status and seconds), one .txt per step, and logs.tar.gz (the estimates as JSON,
# the samples' run logs, timings and results, any failed notebook).
#
# Usage: bash benchmarks/gpu_run.sh OUT_DIR [BUDGET_SECONDS (default 540)]
#   (from the repository root, with the project's packages importable by python3; PROFILE and
#   FRACTIONS override the profile and the first sample's fractions, e.g. for a dry run on a CPU:
#   PROFILE=smoke FRACTIONS="03=0.5 04=0.5 05=0.5 06=0.5" DEVICE=cpu bash benchmarks/gpu_run.sh /tmp/out 900)
set -u
out=$(mkdir -p "${1:?usage: bash benchmarks/gpu_run.sh OUT_DIR [BUDGET_SECONDS]}" && cd "$1" && pwd)
budget=${2:-540}
profile=${PROFILE:-paper}
# the CPU estimate's fractions (bench_profile_time.py's defaults): 2 and 4 of the base models' 100
# epochs, 3 and 6 of the M fits' 150, 2 and 4 of the SAEs' 500, 1 and 2 of chapter 6's tasks per group
fractions=${FRACTIONS:-03=0.02 04=0.02 05=0.004 06=0.01}
py=${PYTHON:-python3}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
samples=$(mktemp -d "${TMPDIR:-/tmp}/esae-gpu-samples-XXXXXX")
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's esae first

{
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
    echo "cpus $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
} > "$out/machine.txt" 2>&1

stage() {  # stage NAME SECONDS COMMAND...: run COMMAND for at most SECONDS, log and time it
    local name=$1 limit=$2; shift 2
    if (( limit < 30 )); then
        echo "$name: skipped, $limit s left" | tee -a "$out/machine.txt"
        rc=124
        return
    fi
    local t0=$(date +%s)
    timeout --kill-after=5 "$limit" "$@" > "$out/$name.txt" 2>&1
    rc=$?
    echo "$name: exit $rc after $(( $(date +%s) - t0 )) s (limit $limit s)" | tee -a "$out/machine.txt"
    # a chapter's kernel left running by the deadline must not run into the next step; only the
    # samples' own kernels (their working folder is a sample tree), never other Jupyter kernels
    for pid in $(pgrep -f ipykernel_launcher); do
        [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$samples"/* ]] && kill "$pid" 2>/dev/null
    done
}

pack() {  # the estimates, the samples' logs, timings, results and failed notebooks into OUT_DIR/logs.tar.gz
    (cd "$samples" && tar czf "$out/logs.tar.gz" --ignore-failed-read ./*.json ./*/run.log ./*/results \
        ./*/book/chapters/failed 2>/dev/null)
    rm -rf "$samples"
    echo "total: $(( $(date +%s) - start )) s" | tee -a "$out/machine.txt"
}

# shellcheck disable=SC2086  # $fractions is a list of CHAPTER=F words
stage profile_time_03-05 $(( $(left) - 150 )) $py benchmarks/bench_profile_time.py --profile "$profile" \
    --chapters 03 04 05 --fraction $fractions --keep "$samples" --json "$samples/profile_time_03-05.json"
if (( rc != 0 && rc != 124 )); then  # a chapter failed on this machine: its notebook is in the logs
    pack
    exit 1
fi
stage bench_saes $(( $(left) - 60 < 120 ? $(left) - 60 : 120 )) $py benchmarks/bench_saes.py --device "${DEVICE:-cuda}"
# shellcheck disable=SC2086
stage profile_time_06 $(( $(left) - 15 )) $py benchmarks/bench_profile_time.py --profile "$profile" \
    --chapters 03 04 05 06 --fraction $fractions --keep "$samples" --reuse --json "$samples/profile_time_06.json"

pack
