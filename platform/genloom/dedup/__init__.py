"""Dedup: one method per module, each returning `Decision`s (drop this item, keep that one).

- `exact.py`: content hash and normalised-content hash;
- `minhash.py`: MinHash LSH over character or word shingles (text);
- `semantic.py`: embeddings in pgvector, neighbours within a cosine threshold through HNSW;
- `leakage.py`: val/test items with a near-duplicate in train;
- `collection.py`: near-duplicate chunks of an ingested collection, flagged for search;
- `job.py`: the `dedup` job: a new sealed version without the duplicates + decisions.

Every method keeps the *first* item of a group in a priority order the caller gives
(real before synthetic, train before val before test, then oldest), and compares an
item only with items already kept, so re-running on the output drops nothing.
"""

from __future__ import annotations

import dataclasses

from genloom.db.models import DEDUP_DECISION_METHODS

METHODS = ("exact", "minhash", "semantic")  # what `--method` chooses from (besides `all`)
assert set(METHODS) <= set(DEDUP_DECISION_METHODS), "every method must be allowed by the schema's CHECK"


@dataclasses.dataclass(frozen=True)
class Decision:
    dropped: int  # item (or chunk) id removed
    kept: int  # the item it duplicates, which stays
    method: str  # one of DEDUP_DECISION_METHODS
    similarity: float  # 1.0 for exact; Jaccard for minhash; cosine for semantic
