"""The training framework every architecture uses (below the networks; the jobs in genloom.jobs sit above both).

- `architecture.py`: the interface an architecture implements (the registry is genloom.jobs.registry)
- `options.py`: typed option dataclasses the CLI fills (TrainOptions, SampleOptions)
- `trainer.py`: the loop (`Trainer`: resume, step, evaluate, checkpoint, register) in one tracked run
- `context.py`: what an architecture gets (`TrainContext`: device, autocast, DDP) and the distributed helpers
- `checkpoints.py`: resumable state in `run_checkpoints`, written on a background thread
- `ema.py`: the one exponential moving average of weights (GAN generator, diffusion network)
- `schedules.py`: learning-rate schedules (warmup + cosine), apart from networks
- `images.py`: PNG grids
"""
