"""The ONNX Runtime encoder: exported offline, agreeing with torch, and a model identity of its own."""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa

TEXTS = ["Tea is steeped in hot water.", "Owls hunt at night.", "A longer sentence " * 20, "x"]


def test_onnx_vectors_agree_with_torch_and_are_never_mixed(cli, tmp_path, session, tiny_model):
    from genloom import embeddings

    fp32 = cli("models", "export-onnx", tiny_model, "--out", tmp_path / "fp32", "--quantize", "fp32", "--json")
    int8 = cli("models", "export-onnx", tiny_model, "--out", tmp_path / "int8", "--json")
    assert fp32.exit_code == 0 and int8.exit_code == 0, fp32.stderr + int8.stderr
    torch_vectors = embeddings.embed(TEXTS, name=str(tiny_model))
    for folder, tolerance in ((tmp_path / "fp32", 1e-5), (tmp_path / "int8", 0.03)):
        onnx_vectors = embeddings.embed(TEXTS, name=str(folder))
        assert onnx_vectors.dtype == np.float32 and onnx_vectors.shape == torch_vectors.shape
        cosines = (onnx_vectors * torch_vectors).sum(axis=1)
        assert cosines.min() >= 1 - tolerance, (folder.name, cosines)
    assert (
        embeddings.embedding_dim(str(tmp_path / "int8")) == 32 and embeddings.max_tokens(str(tmp_path / "int8")) == 256
    )

    # the backend is part of the identity: the int8 folder is its own embedding model, its own vectors
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(TEXTS[0])
    assert cli("ingest", docs, "-c", "t", "--model", tiny_model).exit_code == 0
    assert cli("embed", "-c", "t", "--model", tmp_path / "int8").exit_code == 0
    names = session.scalars(sa.text("SELECT name FROM embedding_models ORDER BY id")).all()
    assert names == [str(tiny_model.resolve()), str((tmp_path / "int8").resolve())]
    mixed = cli("ingest", docs, "-c", "t", "--model", tmp_path / "int8")
    assert mixed.exit_code == 1 and "is embedded with" in mixed.stderr

    again = cli("models", "export-onnx", tiny_model, "--out", tmp_path / "int8")
    assert again.exit_code == 1 and "exists: choose a new folder" in again.stderr


def test_query_cache_returns_the_same_vector_without_encoding_again(tiny_model, monkeypatch):
    from genloom import embeddings

    first = embeddings.embed_query("cached query", name=str(tiny_model))
    calls = []
    monkeypatch.setattr(embeddings, "embed", lambda *a, **k: calls.append(a) or None)
    second = embeddings.embed_query("cached query", name=str(tiny_model))
    assert calls == [] and np.array_equal(first, second)
    second[0] = 99.0  # a caller changing its copy does not change the cache
    assert embeddings.embed_query("cached query", name=str(tiny_model))[0] == first[0]


def test_onnx_session_takes_genloom_threads_and_does_not_spin(tmp_path, tiny_model, monkeypatch):
    """ONNX Runtime's default (every core, spinning workers) made int8 slower than 1-thread torch on a
    shared machine: the session follows genloom's thread setting, as torch does, and never spins."""
    from genloom.onnx_encoder import OnnxEncoder, export_onnx

    folder = export_onnx(tiny_model, tmp_path / "fp32", quantize="fp32")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("GENLOOM_THREADS", "1")
    options = OnnxEncoder(folder).session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_export_fuses_attention_into_one_operator_per_layer(tmp_path, tiny_model):
    """Eager-attention export + ONNX Runtime's BERT fusions: one Attention kernel per layer, in fp32
    and in the int8 graph (where it is quantised too), not a chain of MatMul/Softmax nodes."""
    import onnx

    from genloom.onnx_encoder import export_onnx

    layers = json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    for precision in ("fp32", "int8"):
        folder = export_onnx(tiny_model, tmp_path / precision, quantize=precision)
        ops = [node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node]
        attention = "QAttention" if precision == "int8" else "Attention"
        assert ops.count(attention) == layers, (precision, sorted(set(ops)))
        assert "Softmax" not in ops
