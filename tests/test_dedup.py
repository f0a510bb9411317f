"""Dedup (issue 7): planted duplicates found, versions + decisions atomic, re-run is a no-op."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from eval_dedup_data import digits_arrays, make_image_dataset, make_text_dataset


def _perturb(img: np.ndarray, rng, kind: str) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    if kind == "shift":  # 1-pixel shift, zero fill (not a wrap-around)
        axis, step = rng.integers(0, 2), rng.choice([-1, 1])
        x = np.roll(x, step, axis=axis)
        edge = 0 if step == 1 else -1
        if axis == 0:
            x[edge, :] = 0
        else:
            x[:, edge] = 0
    x = np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1)
    return np.rint(x * 255).astype(np.uint8)


@pytest.fixture
def planted_digits(session):
    """digits + noisy copies of 5 % of the items. (1-pixel shifts are planted on MNIST in
    bench/dedup_planted.py: on 8×8 digits a pixel is 12 % of the width, more than the
    difference between many distinct digits.)"""
    images, labels = digits_arrays()
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(images), size=int(0.05 * len(images)), replace=False)
    copies = np.stack([_perturb(images[i], rng, "noise") for i in chosen])
    all_images = np.concatenate([images, copies])
    all_labels = np.concatenate([labels, labels[chosen]])
    version, ids = make_image_dataset(session, "digits", all_images, all_labels)
    session.commit()
    originals = {ids[len(images) + j]: ids[i] for j, i in enumerate(chosen)}  # copy id → original id
    return version, ids, originals


def test_planted_image_duplicates_found_and_written_as_a_new_version(planted_digits, session, cli):
    from genloom.db.models import DatasetVersion, DedupDecision, Run

    version, ids, originals = planted_digits
    result = cli("dedup", "digits@1", "--json")
    assert result.exit_code == 0, result.stderr
    out = result.json()
    assert out["input"] == "digits@1" and out["output"] == "digits@2"
    assert out["kept"] + out["dropped"] == len(ids)
    assert set(out["by_method"]) == {"exact", "semantic"}
    pairs = {frozenset(p) for p in session.execute(
        sa.select(DedupDecision.dropped_item_id, DedupDecision.kept_item_id)).all()}
    planted = {frozenset((c, o)) for c, o in originals.items()}
    recall = len(planted & pairs) / len(planted)
    assert recall >= 0.9, f"found {recall:.0%} of planted copies"
    false_drops = len(pairs - planted)
    assert false_drops <= 0.01 * len(ids), f"{false_drops} non-planted items dropped"
    new = session.scalars(sa.select(DatasetVersion).where(DatasetVersion.version == 2)).one()
    assert new.sealed and new.parent_id == version.id and new.item_count == out["kept"]
    run = session.get(Run, out["run_id"])
    assert run.kind == "dedup" and run.status == "succeeded" and run.output_version_id == new.id
    decision = session.scalars(sa.select(DedupDecision)).first()
    assert decision.run_id == run.id and decision.output_version_id == new.id and decision.method == "semantic"
    assert 0.9 < decision.similarity <= 1.0

    # Re-running on the output drops nothing and writes no version.
    again = cli("dedup", "digits@2", "--json").json()
    assert again["dropped"] == 0 and again["output"] == "digits@2"
    assert session.scalar(sa.select(sa.func.count()).select_from(DatasetVersion)) == 2
    # Re-running on the input reuses the version it made before.
    repeat = cli("dedup", "digits@1", "--json").json()
    assert repeat["output"] == "digits@2" and repeat["dropped"] == out["dropped"]
    assert session.scalar(sa.select(sa.func.count()).select_from(DatasetVersion)) == 2


def test_the_job_reports_progress_through_a_callback(planted_digits):
    """The library draws nothing: it reports (task, done, total, status) and the caller renders it."""
    from genloom.dedup.job import DedupOptions, dedup_job

    calls = []
    dedup_job("digits", DedupOptions(dry_run=True), progress=lambda *report: calls.append(report))
    assert {task for task, *_ in calls} == {"dedup digits@1"}
    stages = [status for *_, status in calls]
    assert stages[0] == "exact" and "semantic" in stages
    assert all(done <= (total or done) for _, done, total, _ in calls)


def test_dry_run_writes_no_version(planted_digits, session):
    from genloom.db.models import DatasetVersion, DedupDecision
    from genloom.dedup.job import DedupOptions, dedup_job

    result = dedup_job("digits", DedupOptions(dry_run=True))
    assert result.dropped > 0 and "dry run" in result.output
    assert session.scalar(sa.select(sa.func.count()).select_from(DatasetVersion)) == 1
    assert session.scalar(sa.select(sa.func.count()).select_from(DedupDecision)) == 0


def test_a_failure_while_writing_leaves_neither_version_nor_decisions(planted_digits, session, monkeypatch):
    import genloom.datasets.versions as store
    from genloom.db.models import DatasetVersion, DedupDecision, Run
    from genloom.dedup.job import DedupOptions, dedup_job

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "seal_version", boom)
    with pytest.raises(RuntimeError):
        dedup_job("digits@1", DedupOptions())
    session.expire_all()
    assert session.scalar(sa.select(sa.func.count()).select_from(DatasetVersion)) == 1
    assert session.scalar(sa.select(sa.func.count()).select_from(DedupDecision)) == 0
    run = session.scalars(sa.select(Run).where(Run.kind == "dedup")).one()
    assert run.status == "failed" and "disk full" in run.error


def test_leakage_reports_test_copies_of_train_items(session, cli):
    images, labels = digits_arrays()
    images, labels = images[:300], labels[:300]
    rng = np.random.default_rng(1)
    splits = ["train"] * 300
    leaked = [images[i] for i in range(5)]  # noisy copies of train items 0..4 placed in test
    noisy = [_perturb(im, rng, "noise") for im in leaked]
    _, ids = make_image_dataset(session, "leaky", np.concatenate([images, np.stack(noisy)]),
                                np.concatenate([labels, labels[:5]]), splits=splits + ["test"] * 5)
    session.commit()
    out = cli("dedup", "leaky", "--leakage", "--json").json()
    assert out["by_split"] == {"val": 0, "test": 5}
    assert {(e["item_id"], e["train_item_id"]) for e in out["examples"]} == {(ids[300 + i], ids[i]) for i in range(5)}


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=30)) for _ in range(n)]


def test_planted_text_duplicates_found_by_exact_and_minhash(session, cli):
    from genloom.db.models import DedupDecision

    base = _texts(120)
    rng = np.random.default_rng(2)
    copies = {}
    for j, i in enumerate(rng.choice(120, size=12, replace=False)):
        words = base[i].split()
        if j % 3 == 0:  # whitespace and case only: a normalised-exact duplicate
            copy = "  ".join(words).upper() + "\n"
        else:  # one swap of two different adjacent words: a near duplicate
            k = next(k for k in rng.permutation(len(words) - 1) if words[k] != words[k + 1])
            words[k], words[k + 1] = words[k + 1], words[k]
            copy = " ".join(words)
        copies[copy] = base[i]
    version, ids = make_text_dataset(session, "talk", base + list(copies))
    session.commit()
    out = cli("dedup", "talk", "--method", "all", "--json").json()
    assert out["dropped"] == 12 and out["output"] == "talk@2"
    assert out["by_method"]["exact"] == 4 and out["by_method"]["minhash"] == 8
    text_of = dict(zip(ids, base + list(copies)))
    for dropped, kept, method in session.execute(
        sa.select(DedupDecision.dropped_item_id, DedupDecision.kept_item_id, DedupDecision.method)
    ):
        assert copies[text_of[dropped]] == text_of[kept], method
    assert cli("dedup", "talk@2", "--json").json()["dropped"] == 0


def test_collection_chunks_flagged_for_search(session, cli):
    from genloom.db.models import ChunkDuplicate

    conn = session.connection()
    coll = conn.execute(sa.text("INSERT INTO collections (name) VALUES ('c') RETURNING id")).scalar()
    model = conn.execute(sa.text("INSERT INTO embedding_models (name, dim) VALUES ('toy', 3) RETURNING id")).scalar()
    texts = ["the cat sat on the mat today", "THE CAT  sat on the mat today", "a completely different passage here",
             "yet another passage about dogs", "something semantically close"]
    vectors = ["[1,0,0]", "[1,0,0]", "[0,1,0]", "[0,0,1]", "[0.02,0.999,0]"]
    chunk_ids = []
    for n, (text, vec) in enumerate(zip(texts, vectors)):
        doc = conn.execute(sa.text("INSERT INTO documents (collection_id, external_id, sha256) "
                                   "VALUES (:c, :e, :s) RETURNING id"), {"c": coll, "e": f"d{n}", "s": f"{n:064d}"}).scalar()
        cid = conn.execute(sa.text("INSERT INTO chunks (document_id, ordinal, text, token_count) "
                                   "VALUES (:d, 0, :t, 5) RETURNING id"), {"d": doc, "t": text}).scalar()
        conn.execute(sa.text("INSERT INTO embeddings (chunk_id, embedding_model_id, embedding) VALUES (:c, :m, :v)"),
                     {"c": cid, "m": model, "v": vec})
        chunk_ids.append(cid)
    conn.execute(sa.text("UPDATE collections SET embedding_model_id = :m WHERE id = :c"), {"m": model, "c": coll})
    session.commit()
    out = cli("dedup", "--collection", "c", "--json").json()
    assert out["flagged"] == 2 and out["by_method"] == {"exact": 1, "minhash": 0, "semantic": 1}
    flags = dict(session.execute(sa.select(ChunkDuplicate.chunk_id, ChunkDuplicate.duplicate_of_chunk_id)).all())
    assert flags == {chunk_ids[1]: chunk_ids[0], chunk_ids[4]: chunk_ids[2]}
    # Re-running replaces the flags rather than adding to them.
    cli("dedup", "--collection", "c", "--json")
    assert session.scalar(sa.select(sa.func.count()).select_from(ChunkDuplicate)) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["dedup", "digits", "--threshold", "1.5"], "--threshold must be in (0, 1]"),
        (["dedup", "digits", "--threshold", "0"], "--threshold must be in (0, 1]"),
        (["dedup", "nope"], "no dataset 'nope'"),
        (["dedup", "digits", "--method", "minhash"], "minhash compares text shingles"),
        (["dedup", "digits", "--method", "fuzzy"], "unknown method 'fuzzy'"),
        (["dedup"], "give a dataset NAME[@V] or --collection NAME"),
        (["dedup", "--collection", "missing"], "collection 'missing' not found"),
        (["dedup", "digits", "--embedder", "features", "--features", "ghost"], "unknown feature network 'ghost'"),
    ],
)
def test_bad_input_is_one_line(session, cli, args, message):
    images, labels = digits_arrays()
    make_image_dataset(session, "digits", images[:50], labels[:50])
    session.commit()
    result = cli(*args)
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
