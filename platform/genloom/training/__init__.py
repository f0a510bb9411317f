"""The training-job framework every architecture uses.

- `architecture.py`: the interface an architecture implements, and the registry of them
- `options.py`: typed option dataclasses the CLI fills (TrainOptions, SampleOptions)
- `trainer.py`: the job: run row, seed, device, data, loop, checkpoints, resume, registration
- `schedules.py`: learning-rate schedules (warmup + cosine), apart from networks
- `sampling.py`, `scoring.py`: the sample and score jobs; `images.py`: PNG grids
"""
