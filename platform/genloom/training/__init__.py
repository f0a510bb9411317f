"""The training-job framework every architecture uses.

- `architecture.py`: the interface an architecture implements, and the registry of them
- `options.py`: typed option dataclasses the CLI fills (TrainOptions, SampleOptions)
- `trainer.py`: the job (`Trainer`: resume, step, evaluate, checkpoint, register) in one tracked run
- `context.py`: what an architecture gets (`TrainContext`: device, autocast, DDP) and the distributed helpers
- `checkpoints.py`: resumable state in `run_checkpoints`, written on a background thread
- `ema.py`: the one exponential moving average of weights (GAN generator, diffusion network)
- `schedules.py`: learning-rate schedules (warmup + cosine), apart from networks
- `sampling.py`, `scoring.py`: the sample and score jobs; `images.py`: PNG grids
"""
