"""The model jobs, above both the training framework and the networks.

- `registry.py`: the table of architectures (name → class), explicit imports, no discovery
- `train.py`: `train(name, opts)`: resolve the data, check the options, run the framework's Trainer
- `sample.py`, `score.py`: the sample and score jobs; `models.py`: loading and listing registered models

Layers (pyproject's import-linter contract): jobs → architectures (the networks) → training
(the framework: plug-in contract, Trainer, EMA, optimiser, checkpoints) → datasets, db.
"""
