"""The sentence encoder on ONNX Runtime: exported offline from local weights, fp32 or dynamic int8.

    folder = export_onnx(embeddings.model_path(), Path("minilm-int8"), quantize="int8")
    genloom ingest DOCS -c docs --model minilm-int8        # or: genloom models export-onnx --quantize int8

An exported folder holds `model.onnx` (the transformer: token ids → token states), the tokenizer,
the pooling config and `genloom_onnx.json` (backend, precision, source). `genloom.embeddings`
loads any folder holding that marker with `OnnxEncoder` instead of sentence-transformers. The
backend is part of the model's identity because the folder is: its path is the name recorded in
`embedding_models`, so int8 vectors never share an index with fp32 torch ones.

The export traces eager attention and applies ONNX Runtime's BERT fusions (one Attention kernel
per layer, fused layer norms and GELU), which the int8 graph then quantises as well.

Dynamic int8 quantisation (onnxruntime.quantization.quantize_dynamic) stores the weights of the
matrix products as int8 (one scale per output channel) and quantises activations per batch at
run time: no calibration data, about 4× smaller, and on CPUs with VNNI/AVX2 integer dot products
faster than fp32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from genloom.devices import cpu_threads
from genloom.errors import BadInput

MARKER = "genloom_onnx.json"
PRECISIONS = ("fp32", "int8")


def is_onnx_folder(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def _pooling(source: Path) -> str:
    config = json.loads((source / "1_Pooling" / "config.json").read_text()) if (source / "1_Pooling").is_dir() else {}
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_mean_tokens", True):
        return "mean"
    raise BadInput(f"{source}: only mean or CLS pooling can be exported to ONNX")


def export_onnx(source: Path, out: Path, *, quantize: str = "int8") -> Path:
    """Export the sentence-transformers folder `source` to an ONNX folder `out` (fp32, or int8 weights)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    if quantize not in PRECISIONS:
        raise BadInput(f"unknown --quantize {quantize!r}; use one of: {', '.join(PRECISIONS)}")
    source, out = Path(source), Path(out)
    if out.exists():
        raise BadInput(f"{out} exists: choose a new folder for the exported model")
    pooling = _pooling(source)
    # Eager attention traces to the plain MatMul/Softmax pattern that ONNX Runtime's BERT optimizer
    # fuses into one Attention operator per layer (SDPA's trace is not recognised).
    model = AutoModel.from_pretrained(str(source), local_files_only=True, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    st_config = source / "sentence_bert_config.json"
    max_len = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.is_file() else 256
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Two lengths, so the trace takes the padded-batch path of the attention mask.
    sample = tokenizer(
        ["an example sentence", "a second, longer example sentence that pads the first"],
        padding=True,
        return_tensors="pt",
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"token_states": {0: "batch", 1: "tokens"}}

    class _States(torch.nn.Module):  # the exported graph returns the token states only
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    fp32 = tmp / "model_fp32.onnx"
    with torch.inference_mode():
        # The TorchScript exporter (dynamo=False): dynamic batch and length axes, no onnxscript needed.
        torch.onnx.export(
            _States(model),
            tuple(sample[n] for n in names),
            str(fp32),
            input_names=names,
            output_names=["token_states"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    fused = _fuse(fp32, heads=model.config.num_attention_heads, hidden=model.config.hidden_size)
    if quantize == "int8":
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Only the matrix products (the fused attention's included), one scale per output channel: on
        # MiniLM this keeps the mean cosine to fp32 at ~0.994, where quantising every op with one scale
        # per tensor gave ~0.93. The fused operators' outputs have no inferred type: they are float.
        quantize_dynamic(
            str(fp32),
            str(tmp / "model.onnx"),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            per_channel=True,
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
        fp32.unlink()
    else:
        fp32.rename(tmp / "model.onnx")
    tokenizer.save_pretrained(str(tmp))
    meta = {
        "backend": "onnxruntime",
        "precision": quantize,
        "source": str(source.resolve()),
        "pooling": pooling,
        "max_seq_length": int(max_len),
        "dim": int(model.config.hidden_size),
        "inputs": names,
        "fused_operators": fused,
    }
    (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    tmp.rename(out)
    return out


def _fuse(path: Path, *, heads: int, hidden: int) -> dict[str, int]:
    """Rewrite the exported graph in place with ONNX Runtime's transformer fusions (attention,
    embedding + layer norm, skip + layer norm, bias + GELU as single CPU kernels); return the
    count of each fused operator. On MiniLM at one thread: ~10-20 % more passages per CPU second."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden)
    optimized.save_model_to_file(str(path))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


class OnnxEncoder:
    """The part of SentenceTransformer's interface genloom uses (`encode`, `tokenizer`,
    `max_seq_length`, the dimension), on an ONNX Runtime session."""

    def __init__(self, folder: Path, *, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(folder)
        self.meta = json.loads((folder / MARKER).read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.max_seq_length = int(self.meta["max_seq_length"])
        options = ort.SessionOptions()
        # The same thread policy as torch's (genloom.devices.cpu_threads: GENLOOM_THREADS, then
        # OMP_NUM_THREADS, then the CPUs nobody else keeps busy), not ONNX Runtime's default of every
        # physical core. Its worker threads also spin between operators by default: on a shared
        # machine a spinning thread holds a core another process (or the torch baseline) needs, and
        # a thread that lost its core stalls every operator, so spinning is off.
        options.intra_op_num_threads = threads or cpu_threads()[0]
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def get_embedding_dimension(self) -> int:
        return int(self.meta["dim"])

    def encode(self, texts, *, batch_size: int = 64, normalize_embeddings: bool = True, **_ignored) -> np.ndarray:
        """float32 embeddings (L2-normalised by default), shape (len(texts), dim)."""
        out = np.zeros((len(texts), self.get_embedding_dimension()), dtype=np.float32)
        # Sorted by length, as sentence-transformers does: batches pad to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="np",
            )
            feeds = {n: enc[n].astype(np.int64) for n in self.meta["inputs"]}
            states = self.session.run(["token_states"], feeds)[0]
            if self.meta["pooling"] == "cls":
                pooled = states[:, 0]
            else:
                mask = enc["attention_mask"][..., None].astype(np.float32)
                pooled = (states * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            if normalize_embeddings:
                pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[idx] = pooled
        return out
