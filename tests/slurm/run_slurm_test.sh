#!/usr/bin/env bash
# SLURM integration test: run the workflow through the cluster profile on a throw-away
# single-node SLURM cluster, run the same config locally, and compare the results.
#
#   tests/slurm/run_slurm_test.sh [options] [CONFIGFILE...]     (as root; `make test-slurm`)
#
#   CONFIGFILE...       config file(s) relative to the source tree
#                       (default: tests/config-tiny.yaml; with --toy: config.yaml)
#   --toy               test the harness itself with tests/slurm/toy/ (no real workflow needed)
#   --source DIR        tree to copy and run (default: the repository root)
#   --profile DIR       profile to use (default: <repo>/slurm); copied to <copy>/slurm
#   --target RULE       target rule (default: all)
#   --limit SECONDS     timeout for each snakemake run (default: 3600)
#   --workdir DIR       scratch dir for the two copies (default: /tmp/diffattr-slurm-test)
#   --gpu-rules "R ..." rules whose `gpu` resource is zeroed (default: all rules)
#   --no-local          skip the local reference run and the comparison
#   --faults            inject faults into the SLURM run (tiny config): scancel a running
#                       train_main job after its first checkpoint and a running
#                       extract_train_features job (Snakemake retries them; the training
#                       must resume from its checkpoint), then SIGKILL the Snakemake driver
#                       mid-run and restart it (--unlock, same command). The results must
#                       still equal the undisturbed local run's.
#   --keep-cluster      leave the SLURM daemons running at the end
#   -- ARGS...          extra arguments for both snakemake runs
#
# Steps: start SLURM (tests/slurm/start_slurm.sh) -> copy the working tree (tracked and
# untracked-but-not-ignored files) to <workdir>/slurm and <workdir>/local -> run
# `snakemake --profile slurm` in the first copy, check that a dry run afterwards has
# nothing to do -> run `snakemake --cores 2` in the second -> compare results/ with
# python -m diffattr.compare -> stop the daemons this script started (trap).
# Exits non-zero on any failure. Every wait is bounded.
#
# Environment: SNAKEMAKE (default <repo>/.venv/bin/snakemake), PYTHON (<repo>/.venv/bin/python),
# SLURM_TEST_DIR (daemon scratch dir, see start_slurm.sh), SLURM_TEST_MEM_MB (1000),
# SLURM_TEST_RUNTIME (30; minutes): per-rule caps so that jobs fit the test node.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/tests/slurm
SNAKEMAKE=${SNAKEMAKE:-$REPO/.venv/bin/snakemake}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SOURCE=$REPO
PROFILE=$REPO/slurm
TARGET=all
LIMIT=3600
WORK=/tmp/diffattr-slurm-test
GPU_RULES=all
MEM_MB=${SLURM_TEST_MEM_MB:-1000}
RUNTIME=${SLURM_TEST_RUNTIME:-30}
RUN_LOCAL=1
FAULTS=0
KEEP_CLUSTER=0
TOY=0
CONFIGS=()
EXTRA=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

while (($#)); do
    case $1 in
        --toy) TOY=1; SOURCE=$HERE/toy ;;
        --source) SOURCE=$(cd "$2" && pwd); shift ;;
        --profile) PROFILE=$(cd "$2" && pwd); shift ;;
        --target) TARGET=$2; shift ;;
        --limit) LIMIT=$2; shift ;;
        --workdir) WORK=$2; shift ;;
        --gpu-rules) GPU_RULES=$2; shift ;;
        --no-local) RUN_LOCAL=0 ;;
        --faults) FAULTS=1 ;;
        --keep-cluster) KEEP_CLUSTER=1 ;;
        -h | --help) usage 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) CONFIGS+=("$1") ;;
    esac
    shift
done
if ((${#CONFIGS[@]} == 0)); then
    if ((TOY)); then CONFIGS=(config.yaml); else CONFIGS=(tests/config-tiny.yaml); fi
fi

log() { echo "[run_slurm_test] $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (starts slurmctld/slurmd/munged)"
[[ -x $SNAKEMAKE ]] || die "snakemake not found at $SNAKEMAKE (pip install -e '.[workflow]' into .venv)"
[[ -f $PROFILE/profile.yaml || -f $PROFILE/config.yaml ]] || die "no profile.yaml in $PROFILE"
for c in "${CONFIGS[@]}"; do [[ -f $SOURCE/$c ]] || die "config file $SOURCE/$c not found"; done
export PATH="$(dirname "$SNAKEMAKE"):$PATH"

t_start=$SECONDS

# ---------------------------------------------------------------- cluster
SLURM_DIR=${SLURM_TEST_DIR:-/tmp/diffattr-slurm}
started_cluster=0
sm_pid=""
stop_snakemake() {  # stop a running snakemake (its `timeout` wrapper has its own process group)
    [[ -n $sm_pid ]] && kill -0 "$sm_pid" 2>/dev/null || return 0
    log "stopping snakemake (pid $sm_pid)"
    # SIGINT (= Ctrl-C; `timeout` forwards it): snakemake scancels its SLURM jobs and exits.
    # (SIGTERM would make it wait for the running jobs.) Then SIGTERM, then SIGKILL.
    local sig deadline
    for sig in INT TERM; do
        kill -"$sig" "$sm_pid" 2>/dev/null || true
        deadline=$((SECONDS + 30))
        while kill -0 "$sm_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
        kill -0 "$sm_pid" 2>/dev/null || break
    done
    kill -0 "$sm_pid" 2>/dev/null && { pkill -KILL -P "$sm_pid" 2>/dev/null; kill -KILL "$sm_pid" 2>/dev/null; }
    wait "$sm_pid" 2>/dev/null || true
    sm_pid=""
}
cleanup() {
    local rc=$?
    stop_snakemake
    if ((started_cluster)) && ! ((KEEP_CLUSTER)); then
        "$HERE/stop_slurm.sh" || { log "stop_slurm.sh failed"; rc=1; }
    fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# run_snakemake LOGFILE DIR ARGS...: snakemake in the background under `timeout`, so that
# signals to this script are handled at once; while it runs, fail fast if SLURM holds a
# job that can never start on the test node (e.g. more CPUs than the node has).
STUCK_REASONS='PartitionConfig|BadConstraints|PartitionNodeLimit|PartitionTimeLimit|ReqNodeNotAvail|NodeDown|InvalidAccount|InvalidQOS|PartitionDown'
run_snakemake() {
    local logfile=$1 dir=$2 rc=0 stuck_since=0 reasons
    shift 2
    # The copy's own src/ must win over the venv's editable install of the live checkout
    # (which may be mid-edit); sbatch --export=ALL hands PYTHONPATH on to the jobs.
    (
        cd "$dir"
        [[ -d src ]] && export PYTHONPATH="$dir/src${PYTHONPATH:+:$PYTHONPATH}"
        exec timeout -k 30 "$LIMIT" "$SNAKEMAKE" "$@"
    ) >"$logfile" 2>&1 &
    sm_pid=$!
    while kill -0 "$sm_pid" 2>/dev/null; do
        reasons=$(timeout 10 squeue -h -t PD -o '%i:%r' 2>/dev/null | grep -E ":($STUCK_REASONS)" || true)
        if [[ -n $reasons ]]; then
            ((stuck_since)) || stuck_since=$SECONDS
            if ((SECONDS - stuck_since > 20)); then
                log "SLURM job(s) pending for a reason that cannot resolve: $(echo $reasons)"
                squeue -o '%i %j %C %m %l %b %r' >&2 || true
                stop_snakemake
                return 3
            fi
        else
            stuck_since=0
        fi
        sleep 2
    done
    wait "$sm_pid" || rc=$?
    sm_pid=""
    return $rc
}

if [[ -s $SLURM_DIR/pids ]]; then
    log "SLURM test cluster already running; it will be left running"
else
    started_cluster=1
fi
timeout -k 10 900 "$HERE/start_slurm.sh" >/dev/null || die "could not start SLURM"

# ---------------------------------------------------------------- scratch copies
copy_tree() {  # copy_tree DEST: working tree of $SOURCE without ignored files
    local dest=$1
    rm -rf "$dest"
    mkdir -p "$dest"
    if git -C "$SOURCE" rev-parse --show-toplevel >/dev/null 2>&1 && [[ $(git -C "$SOURCE" rev-parse --show-toplevel) == "$SOURCE" ]]; then
        (cd "$SOURCE" && git ls-files -z -co --exclude-standard |
            tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$dest"
    else
        tar -C "$SOURCE" --exclude=.snakemake --exclude=results --exclude=logs -cf - . | tar -xf - -C "$dest"
    fi
    rm -rf "$dest/slurm"
    cp -r "$PROFILE" "$dest/slurm"
}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
SLURM_RUN=$WORK/slurm
LOCAL_RUN=$WORK/local
copy_tree "$SLURM_RUN"
((RUN_LOCAL)) && copy_tree "$LOCAL_RUN"

# ---------------------------------------------------------------- arguments
nproc=$(nproc)
config_args=(--configfile "${CONFIGS[@]}")
# The test node has no GPUs: zero the `gpu` resource per rule. The plugin adds --gpus
# to sbatch (and the jobstep to srun, inside the job) only when gpu > 0. It has to be
# --set-resources: a global `--resources gpu=0` caps gpu in the submitting process, but
# is not passed on to the Snakemake inside the job, whose `srun --gpus=1` then fails
# (verified). Setting gpu=0 on a CPU rule, or naming a rule that does not exist, is
# harmless, so by default every rule gets it.
# Every rule is also capped to the test node (mem/runtime; threads via --max-threads);
# the node does not enforce memory, so this only affects scheduling.
rules=$(cd "$SLURM_RUN" && PYTHONPATH="$SLURM_RUN/src${PYTHONPATH:+:$PYTHONPATH}" "$SNAKEMAKE" --list-rules "${config_args[@]}" 2>/dev/null) ||
    die "snakemake --list-rules failed in $SLURM_RUN"
rules=$(awk '/^[A-Za-z_][A-Za-z0-9_]*$/' <<<"$rules")
[[ -n $rules ]] || die "snakemake --list-rules listed no rules"
[[ $GPU_RULES == all ]] && GPU_RULES=$rules
set_res=()
for r in $rules; do set_res+=("$r:mem_mb=$MEM_MB" "$r:runtime=$RUNTIME"); done
for r in $GPU_RULES; do set_res+=("$r:gpu=0"); done
common_args=("${config_args[@]}" --set-resources "${set_res[@]}" --max-threads "$nproc" "${EXTRA[@]}")

# ---------------------------------------------------------------- faults
# running_job RULE: the id of a RUNNING SLURM job of RULE (the plugin's comment is rule_<name>...)
running_job() {
    timeout 10 squeue -h -t R -o '%i %k' 2>/dev/null | awk -v r="rule_$1" '$2 == r || index($2, r "_wildcards_") == 1 {print $1; exit}'
}
# inject_faults: runs beside the SLURM run; each step waits (bounded) for its moment, acts and
# writes one line to $WORK/faults.log. A step whose moment never comes fails the test.
inject_faults() {
    local deadline job driver checkpoint=$SLURM_RUN/.checkpoints/tiny/main/state.pt
    deadline=$((SECONDS + LIMIT))  # the moments come as fast as the node runs the jobs
    job=""
    # train_main after its first checkpoint. The tiny model trains in about half a second, so
    # take the job id while its imports run (seconds), then watch only the checkpoint file: an
    # squeue per poll is too slow for that window on a loaded machine.
    # A train_main that finished unseen fails the test at once rather than at the deadline.
    local trained=$SLURM_RUN/logs/tiny/train_main.log
    while ((SECONDS < deadline)) && ! grep -qs "diffattr: trained" "$trained"; do
        job=$(running_job train_main) && [[ -n $job ]] && break
        sleep 0.3
    done
    while [[ -n $job && ! -s $checkpoint ]] && ((SECONDS < deadline)); do
        grep -qs "diffattr: trained" "$trained" && break
        sleep 0.02
    done
    [[ -n $job && -s $checkpoint ]] || { echo "MISSED train_main" >>"$WORK/faults.log"; return 1; }
    scancel "$job" && echo "scancel train_main job $job after its checkpoint ($(date -u +%T))" >>"$WORK/faults.log"
    job=""
    while ((SECONDS < deadline)); do
        job=$(running_job extract_train_features) && [[ -n $job ]] && break
        sleep 0.3
    done
    [[ -n $job ]] || { echo "MISSED extract_train_features" >>"$WORK/faults.log"; return 1; }
    sleep 1
    scancel "$job" && echo "scancel extract_train_features job $job mid-way ($(date -u +%T))" >>"$WORK/faults.log"
    while ((SECONDS < deadline)); do  # the driver, while measurements run
        [[ -n $(running_job measure_outputs) ]] && break
        sleep 0.3
    done
    driver=$(pgrep -f -P "$1" snakemake | head -n 1)
    [[ -n $driver ]] || { echo "MISSED driver (no snakemake under pid $1)" >>"$WORK/faults.log"; return 1; }
    kill -KILL "$driver" && echo "SIGKILL snakemake driver $driver ($(date -u +%T))" >>"$WORK/faults.log"
}

slurm_args=(--profile slurm
    --default-resources slurm_partition=debug slurm_account= runtime="$RUNTIME" mem_mb="$MEM_MB"
    --slurm-init-seconds-before-status-checks 5 --cores "$nproc"
    "${common_args[@]}" --directory "$SLURM_RUN" "$TARGET")

# ---------------------------------------------------------------- SLURM run
log "SLURM run in $SLURM_RUN (limit ${LIMIT}s, log $WORK/slurm.log)"
t0=$SECONDS
rc=0
if ((FAULTS)); then
    : >"$WORK/faults.log"
    run_snakemake "$WORK/slurm.log" "$SLURM_RUN" "${slurm_args[@]}" &
    runner=$!
    # run_snakemake's own child is the `timeout` wrapper; wait for it, then hand it on
    for _ in $(seq 100); do wrapper=$(pgrep -P "$runner" -x timeout | head -n 1); [[ -n $wrapper ]] && break; sleep 0.1; done
    inject_faults "$wrapper" || log "fault injection incomplete: $(cat "$WORK/faults.log")"
    wait "$runner" || rc=$?
    cat "$WORK/faults.log" >&2
    grep -q "^SIGKILL" "$WORK/faults.log" || die "the faults were not all injected (see $WORK/faults.log)"
    ((rc != 0)) || die "the killed driver exited 0"
    log "driver killed after $((SECONDS - t0))s; waiting for its orphaned SLURM jobs, then restarting"
    deadline=$((SECONDS + 600))
    while [[ -n $(timeout 10 squeue -h -t PD,R,CG -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 2; done
    # the killed driver's lock is still there: a plain restart is refused
    (cd "$SLURM_RUN" && PYTHONPATH="$SLURM_RUN/src${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 300 "$SNAKEMAKE" "${slurm_args[@]}") >"$WORK/slurm-locked.log" 2>&1 &&
        die "a restart was not refused by the killed driver's lock"
    grep -q "cannot be locked" "$WORK/slurm-locked.log" || die "no lock message (see $WORK/slurm-locked.log)"
    (cd "$SLURM_RUN" && PYTHONPATH="$SLURM_RUN/src${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 300 "$SNAKEMAKE" "${slurm_args[@]}" --unlock) >>"$WORK/slurm-locked.log" 2>&1 ||
        die "snakemake --unlock failed"
    rc=0
    run_snakemake "$WORK/slurm-restart.log" "$SLURM_RUN" "${slurm_args[@]}" || rc=$?
    cat "$WORK/slurm-restart.log" >>"$WORK/slurm.log"
    grep -q "resuming from step" "$SLURM_RUN/logs/tiny/train_main.log" ||
        die "the retried train_main did not resume from its checkpoint (logs/tiny/train_main.log)"
    log "faults: the retried train_main $(grep -o 'resuming from step [0-9]* of [0-9]*' "$SLURM_RUN/logs/tiny/train_main.log")"
else
    run_snakemake "$WORK/slurm.log" "$SLURM_RUN" "${slurm_args[@]}" || rc=$?
fi
slurm_wall=$((SECONDS - t0))
if ((rc != 0)); then
    tail -n 60 "$WORK/slurm.log" >&2
    ((rc == 3)) && die "SLURM run aborted: a job can never start on the test node (too many CPUs/too much memory for one job?)"
    ((rc == 124 || rc == 137)) && die "SLURM run timed out after ${LIMIT}s"
    die "SLURM run failed (rc=$rc); full log: $WORK/slurm.log"
fi
grep -qE "has been submitted with SLURM jobid|Submitted array job" "$WORK/slurm.log" ||
    die "no job was submitted to SLURM (see $WORK/slurm.log)"
log "SLURM run OK in ${slurm_wall}s"

# nothing may be left to do (catches outputs SLURM jobs failed to register)
(cd "$SLURM_RUN" && PYTHONPATH="$SLURM_RUN/src${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 300 "$SNAKEMAKE" --profile slurm -n "${common_args[@]}" \
    --directory "$SLURM_RUN" "$TARGET") >"$WORK/slurm-dryrun.log" 2>&1 ||
    die "dry run after the SLURM run failed (see $WORK/slurm-dryrun.log)"
grep -q "Nothing to be done" "$WORK/slurm-dryrun.log" ||
    { cat "$WORK/slurm-dryrun.log" >&2; die "workflow not complete after the SLURM run"; }

# every HDF5 file of the run carries diffattr's `complete` mark (none is half-written)
if ((FAULTS)); then
    (cd "$SLURM_RUN" && PYTHONPATH="$SLURM_RUN/src" timeout -k 10 300 "$PYTHON" -c '
import pathlib, sys
from diffattr.store import open_h5
files = sorted(pathlib.Path("results").rglob("*.h5"))
for path in files:
    open_h5(path).close()
print(f"{len(files)} HDF5 files, all complete")
') >&2 || die "a result file of the SLURM run is not complete"
fi

# ---------------------------------------------------------------- local run + compare
if ((RUN_LOCAL)); then
    log "local run in $LOCAL_RUN (log $WORK/local.log)"
    t0=$SECONDS
    rc=0
    run_snakemake "$WORK/local.log" "$LOCAL_RUN" --cores "$nproc" \
        "${common_args[@]}" --directory "$LOCAL_RUN" "$TARGET" || rc=$?
    local_wall=$((SECONDS - t0))
    if ((rc != 0)); then
        tail -n 60 "$WORK/local.log" >&2
        die "local run failed (rc=$rc); full log: $WORK/local.log"
    fi
    log "local run OK in ${local_wall}s"
    timeout -k 10 600 "$PYTHON" -m diffattr.compare "$SLURM_RUN" "$LOCAL_RUN" ||
        die "results of the SLURM and the local run differ"
fi

log "PASS: SLURM run ${slurm_wall}s${local_wall:+, local run ${local_wall}s}, total wall time $((SECONDS - t_start))s"
