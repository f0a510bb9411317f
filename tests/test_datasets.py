"""Versioned datasets: import, content addressing, sealing, show/diff/export, streaming into tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa


def _import_digits(cli, name="digits", *extra):
    r = cli("datasets", "import", "digits", "--name", name, *extra, "--json")
    assert r.exit_code == 0, r.stderr
    return r.json()


def test_digits_import_show_json_is_exact(cli, engine):
    out = _import_digits(cli)
    assert out["dataset"] == "digits@1" and out["items"] == 1797 and not out["unchanged"]
    r = cli("datasets", "show", "digits", "--json")
    assert r.exit_code == 0, r.stderr
    shown = r.json()
    assert list(shown) == ["name", "version", "parent", "items", "by_split", "by_origin", "by_label", "created_by_run"]
    assert shown["name"] == "digits" and shown["version"] == 1 and shown["parent"] is None
    assert shown["items"] == 1797
    assert shown["by_split"] == {"train": 1437, "val": 180, "test": 180}
    assert shown["by_origin"] == {"real": 1797, "synthetic": 0}
    assert list(shown["by_label"]) == [str(d) for d in range(10)] and sum(shown["by_label"].values()) == 1797
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT kind, status, output_version_id FROM runs WHERE id = :r"),
                           {"r": shown["created_by_run"]}).one()
        sealed = conn.execute(sa.text("SELECT sealed, item_count, manifest_sha256 FROM dataset_versions")).one()
    assert run.kind == "import" and run.status == "succeeded"
    assert sealed.sealed and sealed.item_count == 1797 and len(sealed.manifest_sha256) == 64


def test_content_addressing_dedups_identical_imports(cli, engine):
    _import_digits(cli)
    again = _import_digits(cli)
    assert again["unchanged"] and again["dataset"] == "digits@1"  # idempotent: no version 2
    other = _import_digits(cli, "digits-copy", "--seed", "7")  # same images, another split
    assert other["dataset"] == "digits-copy@1" and other["new_items"] == 0
    with engine.connect() as conn:
        items = conn.execute(sa.text("SELECT count(*) FROM items")).scalar()
        members = conn.execute(sa.text("SELECT count(*) FROM dataset_members")).scalar()
    assert items == 1797 and members == 2 * 1797
    # A different split is a different version of the same dataset, whose parent is the first.
    changed = _import_digits(cli, "digits", "--seed", "3")
    assert changed["dataset"] == "digits@2" and changed["new_items"] == 0
    shown = cli("datasets", "show", "digits@2", "--json").json()
    assert shown["parent"] == "digits@1"


def test_sealed_versions_reject_changes(cli, engine, session):
    from genloom.datasets.versions import add_members, resolve_version
    from genloom.errors import BadInput

    _import_digits(cli)
    version = resolve_version(session, "digits@1")
    with pytest.raises(BadInput, match="sealed"):
        add_members(session, version, [(1, "train")])
    with engine.connect() as conn:  # the database itself refuses, whoever asks
        with pytest.raises(sa.exc.DBAPIError, match="sealed"):
            conn.execute(sa.text("DELETE FROM dataset_members WHERE version_id = :v"), {"v": version.id})
        conn.rollback()
        with pytest.raises(sa.exc.DBAPIError, match="immutable"):
            conn.execute(sa.text("UPDATE items SET label = 'x' WHERE id = 1"))


def test_unknown_dataset_and_version_are_one_line_errors(cli):
    r = cli("datasets", "show", "nope", "--json")
    assert r.exit_code == 1 and r.stderr.strip().count("\n") == 0 and "no dataset 'nope'" in r.stderr
    _import_digits(cli)
    r = cli("datasets", "show", "digits@9")
    assert r.exit_code == 1 and "has no version 9 (versions: digits@1)" in r.stderr
    r = cli("datasets", "show", "digits@x")
    assert r.exit_code == 1 and "bad version" in r.stderr


def _write_png(path, size, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


def test_images_folder_sizes_checked_and_resized(cli, tmp_path):
    for i in range(6):
        _write_png(tmp_path / "imgs" / ("cat" if i % 2 else "dog") / f"{i}.png", (8, 8), 10 * i)
    _write_png(tmp_path / "imgs" / "cat" / "big.png", (12, 10), 200)
    r = cli("datasets", "import", "images", tmp_path / "imgs", "--name", "pets")
    assert r.exit_code == 1 and "mismatched image sizes" in r.stderr and "--resize H W" in r.stderr
    assert r.stderr.strip().count("\n") == 0
    r = cli("datasets", "import", "images", tmp_path / "imgs", "--name", "pets", "--resize", "8", "8", "--json")
    assert r.exit_code == 0, r.stderr
    shown = cli("datasets", "show", "pets", "--json").json()
    assert shown["items"] == 7 and shown["by_label"] == {"cat": 4, "dog": 3}
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope

    with session_scope() as s:
        info = describe_version(s, resolve_version(s, "pets"))
    assert info.shape == (1, 8, 8) and info.label_names == ["cat", "dog"]


def test_text_import_units_and_export(cli, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("first line\nsecond line\n\nthird para\n", encoding="utf-8")
    r = cli("datasets", "import", "text", corpus, "--name", "lines", "--unit", "line", "--val", "0", "--test", "0", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["items"] == 3
    r = cli("datasets", "import", "text", corpus, "--name", "paras", "--unit", "paragraph", "--json")
    assert r.json()["items"] == 2
    r = cli("datasets", "import", "text", corpus, "--name", "bad", "--unit", "word")
    assert r.exit_code == 1 and "unknown --unit 'word'" in r.stderr
    r = cli("datasets", "export", "lines@1", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    texts = sorted((tmp_path / "out" / f["path"]).read_text() for f in manifest["files"])
    assert texts == ["first line", "second line", "third para"]


def test_collection_import_makes_text_items(cli, engine):
    from genloom.db.engine import session_scope
    from genloom.db.models import Chunk, Collection, Document

    with session_scope() as s:
        coll = Collection(name="notes")
        s.add(coll)
        s.flush()
        for ext, parts in (("a", ["alpha one", "alpha two"]), ("b", ["beta"])):
            doc = Document(collection_id=coll.id, external_id=ext, sha256="0" * 64, title=ext.upper())
            s.add(doc)
            s.flush()
            s.add_all([Chunk(document_id=doc.id, ordinal=i, text=t, token_count=2) for i, t in enumerate(parts)])
    r = cli("datasets", "import", "collection", "notes", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["dataset"] == "notes@1" and r.json()["items"] == 2
    with engine.connect() as conn:
        texts = sorted(conn.execute(sa.text("SELECT text FROM items WHERE modality = 'text'")).scalars())
    assert texts == ["alpha one\nalpha two", "beta"]
    assert "collection 'nope' not found" in cli("datasets", "import", "collection", "nope").stderr


def test_diff_and_export_images(cli, tmp_path):
    _import_digits(cli)
    _import_digits(cli, "digits", "--seed", "5")
    r = cli("datasets", "diff", "digits@1", "digits@2", "--json")
    assert r.exit_code == 0, r.stderr
    diff = r.json()
    assert diff["added"] == 0 and diff["removed"] == 0 and diff["moved_split"] > 0
    assert diff["moved_split"] + diff["unchanged"] == 1797
    r = cli("datasets", "export", "digits@1", tmp_path / "png", "--json")
    assert r.json()["files"] == 1797
    pngs = list((tmp_path / "png" / "train").glob("*/*.png"))
    assert len(pngs) == 1437
    from PIL import Image

    assert Image.open(pngs[0]).size == (8, 8)


def test_streaming_batches_shuffle_shards_and_decodes(cli):
    from genloom.datasets.loading import load_split, stream_batches
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope

    _import_digits(cli)
    with session_scope() as s:
        info = describe_version(s, resolve_version(s, "digits"))
    batches = list(stream_batches(info.version_id, "train", 100, shuffle=True, seed=1, epoch=0, label_index=info.label_index()))
    assert [len(b) for b in batches] == [100] * 14 + [37]
    first = batches[0]
    assert tuple(first.x.shape) == (100, 1, 8, 8) and first.x.dtype.is_floating_point
    assert 0.0 <= float(first.x.min()) and float(first.x.max()) <= 1.0
    assert first.y.tolist() == [int(l) for l in first.labels]
    order = [i for b in batches for i in b.item_ids]
    again = [i for b in stream_batches(info.version_id, "train", 100, shuffle=True, seed=1, epoch=0) for i in b.item_ids]
    other = [i for b in stream_batches(info.version_id, "train", 100, shuffle=True, seed=1, epoch=1) for i in b.item_ids]
    assert order == again and order != other and sorted(order) == sorted(other)
    shards = [
        {i for b in stream_batches(info.version_id, "train", 64, shuffle=True, rank=r, world_size=2) for i in b.item_ids}
        for r in (0, 1)
    ]
    assert not (shards[0] & shards[1]) and len(shards[0] | shards[1]) == 1437
    val = load_split(info.version_id, "val")
    assert tuple(val.x.shape) == (180, 1, 8, 8)
    # the pixels are digits' own values (0..16 rescaled to 0..255)
    from sklearn.datasets import load_digits

    want = sorted(np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(-1, 64).sum(1).tolist())
    got = [int(round(float(v))) for v in (val.x.reshape(-1, 64) * 255).round().sum(1)]
    assert set(got) <= set(want)


def test_mnist_idx_import(cli, tmp_path):
    from conftest import shared_data

    mnist = shared_data("mnist")
    r = cli("datasets", "import", "mnist", mnist, "--name", "mnist-small", "--limit", "300", "--json")
    assert r.exit_code == 0, r.stderr
    shown = cli("datasets", "show", "mnist-small", "--json").json()
    assert shown["items"] == 600 and shown["by_split"]["test"] == 300
    assert shown["by_split"]["train"] + shown["by_split"]["val"] == 300
    r = cli("datasets", "import", "mnist", tmp_path, "--name", "nothing")
    assert r.exit_code == 1 and "has no train-images-idx3-ubyte.gz" in r.stderr


def test_packed_shards_give_every_item_once_per_epoch_and_rebuild_identically(cli, engine, monkeypatch):
    import threading

    from genloom.datasets import shards
    from genloom.datasets.loading import stream_batches
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope

    monkeypatch.setattr(shards, "SHARD_BYTES", 64 * 100)  # 100 digits (8×8 bytes) per shard: 15 shards
    _import_digits(cli)
    with session_scope() as s:
        info = describe_version(s, resolve_version(s, "digits"))
    v = info.version_id

    def epoch(**kw):
        kw = dict(shuffle=True, seed=0, epoch=0, label_index=info.label_index()) | kw
        return list(stream_batches(v, "train", 128, **kw))

    batches = epoch()
    with engine.connect() as conn:
        packed = conn.execute(sa.text("SELECT count(*), sum(item_count), min(shape), max(shape) FROM dataset_shards "
                                      "WHERE version_id = :v AND split = 'train'"), {"v": v}).one()
        items = {r.id: r for r in conn.execute(sa.text(
            "SELECT i.id, i.payload, i.label FROM dataset_members m JOIN items i ON i.id = m.item_id "
            "WHERE m.version_id = :v AND m.split = 'train'"), {"v": v})}
    assert tuple(packed) == (15, 1437, [1, 8, 8], [1, 8, 8])
    assert [len(b) for b in batches] == [128] * 11 + [29]
    order = [i for b in batches for i in b.item_ids]
    assert sorted(order) == sorted(items)  # every train item exactly once
    for b in batches:  # pixels, labels and class indices travel with their item
        for item_id, x, label, y in zip(b.item_ids, b.x, b.labels, b.y.tolist()):
            assert np.array_equal(np.rint(x.numpy() * 255).astype(np.uint8).ravel(), np.frombuffer(items[item_id].payload, np.uint8))
            assert label == items[item_id].label and y == info.label_index()[label]
    assert [i for b in epoch() for i in b.item_ids] == order  # same seed and epoch: same order
    assert [i for b in epoch(epoch=1) for i in b.item_ids] != order
    assert all(len(b) == 128 for b in epoch(drop_last=True))
    ranks = [[i for b in epoch(rank=r, world_size=3) for i in b.item_ids] for r in range(3)]
    assert sorted(sum(ranks, [])) == sorted(items) and max(map(len, ranks)) - min(map(len, ranks)) <= 1

    # A cache: dropped, it is rebuilt the same (concurrent readers pack it once) and epochs repeat exactly.
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM dataset_shards"))
    errors: list[BaseException] = []

    def read() -> None:
        try:
            epoch()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [i for b in epoch() for i in b.item_ids] == order
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dataset_shards")).scalar() == 15


def test_unsealed_and_text_versions_stream_rows_without_packing(cli, engine, session, tmp_path):
    from genloom.datasets.loading import stream_batches
    from genloom.datasets.versions import add_members, create_version, resolve_version

    _import_digits(cli)
    sealed = resolve_version(session, "digits@1")
    draft = create_version(session, "digits")
    ids = session.execute(sa.text("SELECT item_id, split FROM dataset_members WHERE version_id = :v"), {"v": sealed.id}).all()
    add_members(session, draft, [(r.item_id, r.split) for r in ids])
    session.commit()
    assert sum(len(b) for b in stream_batches(draft.id, "train", 128, shuffle=True)) == 1437
    paragraphs = [f"paragraph number {k}" for k in range(20)]
    (tmp_path / "t.txt").write_text("\n\n".join(paragraphs))
    assert cli("datasets", "import", "text", str(tmp_path / "t.txt"), "--name", "t", "--unit", "paragraph").exit_code == 0
    texts = resolve_version(session, "t")
    streamed = [t for b in stream_batches(texts.id, "train", 8, shuffle=True) for t in b.texts]
    assert streamed and set(streamed) <= set(paragraphs)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dataset_shards")).scalar() == 0


def test_relabelled_import_is_a_new_version_with_the_new_labels(cli, engine, tmp_path):
    from genloom.datasets.loading import stream_batches
    from genloom.datasets.versions import resolve_version
    from genloom.db.engine import session_scope

    for i in range(12):  # 12 distinct images, 6 labelled cat and 6 dog
        _write_png(tmp_path / "v1" / ("cat" if i % 2 else "dog") / f"{i}.png", (8, 8), 20 * i)
        # the fixed labels: images 0 and 1 were wrong, and image 2 loses its label
        label = {0: "cat", 1: "dog", 2: None}.get(i, "cat" if i % 2 else "dog")
        _write_png(tmp_path / "v2" / label / f"{i}.png" if label else tmp_path / "v2" / f"{i}.png", (8, 8), 20 * i)
    first = cli("datasets", "import", "images", tmp_path / "v1", "--name", "pets", "--seed", "1", "--json").json()
    second = cli("datasets", "import", "images", tmp_path / "v2", "--name", "pets", "--seed", "1", "--json").json()
    assert first["dataset"] == "pets@1" and second["dataset"] == "pets@2" and not second["unchanged"]
    assert second["new_items"] == 0  # the same images: stored once
    again = cli("datasets", "import", "images", tmp_path / "v2", "--name", "pets", "--seed", "1", "--json").json()
    assert again["unchanged"] and again["dataset"] == "pets@2"  # re-running is idempotent
    v1 = cli("datasets", "show", "pets@1", "--json").json()
    v2 = cli("datasets", "show", "pets@2", "--json").json()
    assert v1["by_label"] == {"cat": 6, "dog": 6} and v2["by_label"] == {"": 1, "cat": 6, "dog": 5}
    diff = cli("datasets", "diff", "pets@1", "pets@2", "--json").json()
    assert diff["relabelled"] == 3 and diff["added"] == diff["removed"] == 0
    assert diff["unchanged"] <= 9 <= diff["unchanged"] + diff["moved_split"]  # the file layout also seeds the split

    with session_scope() as s:
        versions = [resolve_version(s, f"pets@{n}") for n in (1, 2)]
    for v, want in zip(versions, ({0: "dog", 1: "cat", 2: "dog"}, {0: "cat", 1: "dog", 2: None})):
        # training reads (packed shards) and ordered reads both see the version's own labels
        for shuffle in (True, False):
            labels = {}
            for split in ("train", "val", "test"):
                for b in stream_batches(v.id, split, 4, shuffle=shuffle):
                    labels.update({int(round(float(x.max()) * 255)) // 20: l for x, l in zip(b.x, b.labels)})
            assert {k: labels[k] for k in want} == want
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT version, count(*) FILTER (WHERE label = 'cat') FROM v_dataset_items "
                                    "WHERE dataset = 'pets' GROUP BY 1 ORDER BY 1")).all()
    assert [tuple(r) for r in rows] == [(1, 6), (2, 6)]
    r = cli("datasets", "export", "pets@2", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    exported = {p.stem: p.parent.name for p in (tmp_path / "out").rglob("*.png")}
    assert sorted(exported.values()).count("unlabelled") == 1
