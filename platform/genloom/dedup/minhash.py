"""Near-duplicate text: MinHash LSH (Broder 1997; datasketch) over 5-gram shingles.

Each text becomes a set of character (default) or word 5-grams; MinHash signatures
with 128–256 permutations go into an LSH index tuned for the Jaccard threshold, so
finding candidates is sub-linear instead of all pairs. Candidates are then checked
with the *exact* Jaccard of the two shingle sets, so LSH false positives never drop
an item. LSH false negatives (a pair above the threshold whose bands never collide) are
the method's only miss; datasketch's default bands for 0.8 catch a pair at J = 0.8 only
40 % of the time, so the index is built for threshold − 0.1 with false negatives
weighted 4× (`lsh_index`): a pair at J = 0.8 becomes a candidate 98.6 % of the time,
at 0.85 99.9 %, and the extra candidates only cost an exact check.

Shingles are hashed with CRC-32, which unlike Python's `hash` is the same in every
process: the same input gives the same candidates, so runs are reproducible.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Iterator

import numpy as np

from genloom.dedup import Decision
from genloom.dedup.exact import normalise_text
from genloom.errors import BadInput


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
    threshold: float = 0.8  # Jaccard similarity at or above which two texts are duplicates
    num_perm: int = 128  # permutations: 128 is datasketch's default, 256 halves the variance
    ngram: int = 5  # shingle length
    unit: str = "char"  # 'char' shingles survive word swaps better; 'word' is cheaper on long texts
    seed: int = 1

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise BadInput(f"MinHash threshold must be in (0, 1], got {self.threshold}")
        if not 16 <= self.num_perm <= 1024:
            raise BadInput(f"num_perm must be between 16 and 1024, got {self.num_perm}")
        if self.ngram < 1:
            raise BadInput("shingle length must be at least 1")
        if self.unit not in ("char", "word"):
            raise BadInput(f"shingle unit must be 'char' or 'word', got {self.unit!r}")


def shingle_hashes(text: str, *, ngram: int = 5, unit: str = "char") -> np.ndarray:
    """Sorted unique CRC-32 hashes of the text's n-gram shingles (after normalisation)."""
    norm = normalise_text(text)
    if unit == "word":
        tokens = norm.split(" ")
        grams = [" ".join(tokens[i : i + ngram]) for i in range(max(1, len(tokens) - ngram + 1))]
    else:
        grams = [norm[i : i + ngram] for i in range(max(1, len(norm) - ngram + 1))]
    return np.unique(np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams)))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 1.0


class MinHasher:
    """Signatures with one shared permutation table (building it per text would dominate)."""

    def __init__(self, config: MinHashConfig):
        from datasketch import MinHash

        self.config = config
        self._template = MinHash(num_perm=config.num_perm, seed=config.seed)

    def signature(self, hashes: np.ndarray):
        """A LeanMinHash of already-hashed shingles (datasketch's affine permutation scheme)."""
        from datasketch import LeanMinHash, MinHash

        m = MinHash(
            num_perm=self.config.num_perm,
            seed=self.config.seed,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
            hashfunc=_identity,
        )
        m.update_batch(hashes.tolist())
        return LeanMinHash(m)


def lsh_index(config: MinHashConfig):
    from datasketch import MinHashLSH

    return MinHashLSH(threshold=max(0.05, config.threshold - 0.1), num_perm=config.num_perm, weights=(0.2, 0.8))


def _identity(value):
    return value


def minhash_duplicates(texts: Iterable[tuple[int, str]], config: MinHashConfig | None = None) -> list[Decision]:
    """`texts` is (id, text) in keep-priority order. Each text is compared with the texts
    kept before it; if one has Jaccard ≥ threshold the text is dropped in favour of the
    most similar one, otherwise it is kept and indexed."""
    return [d for d in iter_minhash_duplicates(texts, config) if d is not None]


def iter_minhash_duplicates(
    texts: Iterable[tuple[int, str]], config: MinHashConfig | None = None
) -> Iterator[Decision | None]:
    """As `minhash_duplicates`, yielding None for every kept text (drives progress bars)."""
    config = config or MinHashConfig()
    hasher = MinHasher(config)
    lsh = lsh_index(config)
    kept_shingles: dict[int, np.ndarray] = {}
    for item_id, text in texts:
        hashes = shingle_hashes(text, ngram=config.ngram, unit=config.unit)
        sig = hasher.signature(hashes)
        best_id, best_sim = None, -1.0
        for candidate in lsh.query(sig):
            sim = jaccard(hashes, kept_shingles[candidate])
            if sim >= config.threshold and (sim > best_sim or (sim == best_sim and candidate < best_id)):
                best_id, best_sim = candidate, sim
        if best_id is not None:
            yield Decision(dropped=item_id, kept=best_id, method="minhash", similarity=float(best_sim))
        else:
            lsh.insert(item_id, sig, check_duplication=False)
            kept_shingles[item_id] = hashes
            yield None
