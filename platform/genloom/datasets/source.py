"""A dataset version as training reads it: streamed batches of a split, per DDP rank and epoch.

The training framework hands a `DataSource` to an architecture's `train_batches` and
`evaluate` (genloom.training.architecture); it is a reader of the store, so it lives with the
other dataset readers.
"""

from __future__ import annotations

from collections.abc import Iterator

from genloom.errors import BadInput


class DataSource:
    """The input version as the framework streams it (given to train_batches and evaluate)."""

    def __init__(
        self,
        info,
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_epoch: int = 0,
        label_index: dict[str, int] | None = None,
    ):
        self.info = info  # genloom.datasets.versions.DataInfo
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = start_epoch  # advanced by train_stream; saved in checkpoints
        self.label_index = label_index if label_index is not None else info.label_index()

    def stream(
        self,
        split: str,
        *,
        batch_size: int | None = None,
        shuffle: bool = False,
        epoch: int = 0,
        shard: bool = False,
        drop_last: bool = False,
    ) -> Iterator:
        """One pass over a split in batches (streamed from Postgres)."""
        from genloom.datasets.loading import stream_batches

        return stream_batches(
            self.info.version_id,
            split,
            batch_size or self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank if shard else 0,
            world_size=self.world_size if shard else 1,
            drop_last=drop_last,
            label_index=self.label_index,
        )

    def train_stream(self, prefetch: int = 2) -> Iterator:
        """Endless shuffled train batches: a new seeded order per epoch, this rank's shard.

        A background thread reads `prefetch` batches ahead (psycopg releases the GIL while it
        waits on the server), so fetching from Postgres overlaps the training step."""
        from genloom.datasets.prefetch import prefetched

        return prefetched(self._epochs(), prefetch) if prefetch else self._epochs()

    def _epochs(self) -> Iterator:
        while True:
            produced = 0
            for batch in self.stream(
                "train",
                shuffle=True,
                epoch=self.epoch,
                shard=True,
                drop_last=self.info.split_counts.get("train", 0) >= self.batch_size * self.world_size,
            ):
                produced += 1
                yield batch
            if produced == 0:
                raise BadInput(f"the train split of {self.info.ref} is empty")
            self.epoch += 1

    def load(self, split: str, *, limit: int | None = None):
        """A whole split as one Batch (small splits: validation, sampling references)."""
        from genloom.datasets.loading import load_split

        return load_split(self.info.version_id, split, label_index=self.label_index, limit=limit)
