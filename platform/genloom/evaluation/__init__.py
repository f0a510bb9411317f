"""Evaluation: image metrics (FID, KID, precision/recall, density/coverage), text
metrics (perplexity, BLEU, chrF, distinct-n, memorisation), the feature network, and
the `evaluate` jobs that write them to `runs` + `metrics`."""
