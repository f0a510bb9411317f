"""Fine-tuning the shipped sentence encoder (all-MiniLM-L6-v2, or a registered descendant).

One path for every retrieval model genloom trains from its own data:
- `bi_encoder`: the embedder, with an in-batch-negatives loss (`genloom train embedder`);
- `cross_encoder`: a reranker initialised from the encoder's weights (`genloom train reranker`);
- `jobs`: the runs that read a dataset of pairs (genloom.datasets.retrieval_pairs), train, and
  register the result in the model registry with its run and dataset version.
"""
