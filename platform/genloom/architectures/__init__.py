"""One file per network. Each defines a subclass of `genloom.training.architecture.Architecture`
(the framework below it); `genloom.jobs.registry.ARCHITECTURES` lists them by name."""
