"""One file per network. Each module defines `ARCHITECTURE`, a subclass of
`genloom.training.architecture.Architecture`; `training.architecture.REGISTRY` maps names to modules."""
