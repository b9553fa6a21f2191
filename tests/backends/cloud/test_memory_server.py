"""The memory port on a Qdrant server (``ServerQdrantMemory``), against the Qdrant REST double.

What every backend promises alike (plan without I/O, undo twice and from the planned entry, 429 with
both Retry-After forms, 5xx, timeout, refused connection) is checked in tests/backends/test_contract.py,
which builds this backend with tests/builders/memory_server.py (as this file does); this file keeps what is this
service's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from airflow.sdk import Connection

from include.orchestrator.backends import registry as connections
from include.orchestrator.backends.local.memory_qdrant import LocalQdrantMemory, ServerQdrantMemory, point_id
from include.orchestrator.domain.ports import Effect
from include.orchestrator.errors import ConnectionConfigError, ServiceError
from tests.builders.memory_server import EXISTS, KEY, connection
from tests.doubles import json_response
from tests.doubles.qdrant_server import QdrantServerDouble

pytestmark = [
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"),  # the double speaks http
    # qdrant-client checks the server version in a background thread, which may outlive a test's double.
    pytest.mark.filterwarnings("ignore:Failed to obtain server version"),
]


@pytest.fixture
def qdrant() -> Iterator[QdrantServerDouble]:
    with QdrantServerDouble(api_key=KEY) as double:
        yield double


@pytest.fixture
def memory(qdrant: QdrantServerDouble) -> ServerQdrantMemory:
    return ServerQdrantMemory("campaign_memory", connection(qdrant.url))


# --- the port's contract ------------------------------------------------------------------------


def test_remember_recall_undo_round_trip(qdrant: QdrantServerDouble, memory: ServerQdrantMemory) -> None:
    effect = memory.remember("research", "pricing", "Competitors lowered their subscription prices.", {"campaign": "spring"})
    memory.remember("research", "hiring", "The team is hiring two backend engineers.", {"campaign": "spring"})
    memory.remember("research", "pricing-autumn", "Rivals made their plans cheaper this autumn.", {"campaign": "autumn"})
    memory.remember("voice", "pricing", "Talk about prices plainly and warmly.", {"campaign": "spring"})

    assert (effect.port, effect.backend, effect.kind) == ("memory", "qdrant_server", "memory_points")
    assert effect.conn_id == "campaign_memory"
    # The same layout as the local store: one point per (namespace, key), the same deterministic id.
    assert effect.ref == LocalQdrantMemory("campaign_memory", Path("unused")).plan("research", "pricing", "").ref
    assert KEY not in effect.model_dump_json()
    assert qdrant.collections() == ["campaign_memory"]
    assert qdrant.indexes() == {"namespace": "keyword", "key": "keyword"}
    stored = {p["id"]: p["payload"] for p in qdrant.points(namespace="research")}
    assert stored[point_id("research", "pricing")] == {
        "campaign": "spring",
        "namespace": "research",
        "key": "pricing",
        "text": "Competitors lowered their subscription prices.",
    }

    hits = memory.recall("research", "cheaper plans from competitors", limit=5)  # real scores from the Qdrant engine
    assert {h.key for h in hits[:2]} == {"pricing", "pricing-autumn"} and hits[-1].key == "hiring"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    spring = memory.recall("research", "cheaper plans from competitors", limit=5, where={"campaign": "spring"})
    assert [(h.key, h.payload) for h in spring] == [("pricing", {"campaign": "spring"}), ("hiring", {"campaign": "spring"})]
    assert memory.recall("nowhere", "prices", limit=3) == [] and memory.count() == 4 and memory.count("voice") == 1

    assert memory.undo(effect) is True
    assert memory.undo(Effect.model_validate_json(effect.model_dump_json())) is False  # as read back from the ledger
    assert qdrant.point_keys() == ["research/hiring", "research/pricing-autumn", "voice/pricing"]
    assert qdrant.problems == [] and qdrant.auth_failures == []


def test_built_from_a_qdrant_connection(qdrant: QdrantServerDouble) -> None:
    host, port = qdrant.url.removeprefix("http://").split(":")
    conn = Connection(
        conn_id="mem",
        conn_type="qdrant",
        host=host,
        port=int(port),
        password=KEY,
        extra=json.dumps({"https": False, "collection": "team_memory"}),
    )
    memory = connections.backend_for("memory", "mem", conn)
    assert isinstance(memory, ServerQdrantMemory) and qdrant.calls == []  # building it does no I/O
    effect = memory.remember("drafts", "run-1", "A draft.", {})
    assert effect.ref["collection"] == "team_memory" and qdrant.point_keys("team_memory") == ["drafts/run-1"]
    assert qdrant.problems == []


def test_remembering_twice_makes_one_point(qdrant: QdrantServerDouble, memory: ServerQdrantMemory) -> None:
    first = memory.remember("brand_voices", "acme", "Friendly and short.", {})
    second = memory.remember("brand_voices", "acme", "Formal and precise.", {"campaign": "b2b"})
    assert first == second and memory.count() == 1 and qdrant.count("PUT", r"/collections/campaign_memory") == 1
    [point] = qdrant.points()
    assert point["payload"]["text"] == "Formal and precise." and point["payload"]["campaign"] == "b2b"
    assert qdrant.problems == []


def test_undo_before_the_collection_exists_and_of_another_backends_effect(
    qdrant: QdrantServerDouble, memory: ServerQdrantMemory
) -> None:
    # Undo from the planned entry, twice, of a point never made: tests/backends/test_contract.py
    assert memory.undo(memory.plan("research", "never", "")) is False  # no collection yet
    assert qdrant.collections() == []
    with pytest.raises(ValueError, match="cannot undo"):
        memory.undo(
            Effect(
                port="memory",
                conn_id="campaign_memory",
                backend="qdrant_local",
                kind="memory_points",
                key="k",
                ref={"collection": "campaign_memory", "point_ids": []},
            )
        )
    assert qdrant.problems == []


def test_collection_created_by_another_task_meanwhile_is_adopted(qdrant: QdrantServerDouble, memory: ServerQdrantMemory) -> None:
    other = ServerQdrantMemory("campaign_memory", connection(qdrant.url))
    other.remember("research", "first", "Made by the other task.", {})
    # Our task looked before the other created it: the server now answers the create with 409.
    qdrant.fail_next("GET", EXISTS, 200, json_response({"result": {"exists": False}, "status": "ok", "time": 0.0}))
    memory.remember("research", "second", "Made by this task.", {})
    assert qdrant.point_keys() == ["research/first", "research/second"]
    assert qdrant.count("PUT", r"/collections/campaign_memory") == 2  # the second create got 409 and was adopted
    assert qdrant.problems == []


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("password", "reason"), [(None, "Must provide an API key"), ("wrong-key", "Invalid API key")])
def test_missing_or_wrong_api_key_fails_fast(qdrant: QdrantServerDouble, password: str | None, reason: str) -> None:
    memory = ServerQdrantMemory("campaign_memory", connection(qdrant.url, password=password))
    with pytest.raises(ServiceError, match=reason) as caught:
        memory.remember("research", "pricing", "Prices fell.", {})
    assert caught.value.retryable is False and caught.value.status == 403 and "remember research/pricing" in str(caught.value)
    assert "wrong-key" not in str(caught.value)
    assert qdrant.auth_failures and qdrant.points() == [] and qdrant.problems == []


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", EXISTS, 401, "Unauthorized: Invalid API key or JWT"),
        ("POST", r"/collections/campaign_memory/points/query", 404, "Not found: Collection `campaign_memory` doesn't exist!"),
        ("POST", r"/collections/campaign_memory/points/query", 400, "Wrong input: Vector dimension error: expected dim: 384"),
    ],
)
def test_client_errors_fail_fast_with_qdrants_message(
    qdrant: QdrantServerDouble, memory: ServerQdrantMemory, method: str, path: str, status: int, message: str
) -> None:
    memory.remember("research", "pricing", "Prices fell.", {})
    qdrant.fail_next(method, path, status, {"message": message})
    with pytest.raises(ServiceError) as caught:
        memory.recall("research", "prices", limit=3)
    error = caught.value
    assert (error.service, error.status, error.retryable, error.retry_after) == ("qdrant", status, False, None)
    assert message in str(error) and "recall from research" in str(error)
    assert qdrant.problems == []


def test_connection_settings_are_checked_without_io() -> None:
    with pytest.raises(ConnectionConfigError, match="'campaign_memory'.*needs a host"):
        ServerQdrantMemory("campaign_memory", Connection(conn_id="campaign_memory", conn_type="qdrant"))
    with pytest.raises(ConnectionConfigError, match="in host and in the extra .url.: keep one"):
        ServerQdrantMemory("campaign_memory", connection("http://a:6333", url="http://b:6333"))


def test_the_double_refuses_what_qdrant_refuses(qdrant: QdrantServerDouble) -> None:
    headers = {"api-key": KEY}
    vectors = {"vectors": {"size": 2, "distance": "Cosine"}}
    ok = requests.put(f"{qdrant.url}/collections/c", json=vectors, headers=headers, timeout=5)
    assert ok.status_code == 200 and ok.json()["result"] is True and ok.json()["status"] == "ok"
    typo = {"points": [{"id": 1, "vectr": [1, 0]}]}
    bad = requests.put(f"{qdrant.url}/collections/c/points", json=typo, headers=headers, timeout=5)
    assert bad.status_code == 400 and "Format error in JSON body" in bad.json()["status"]["error"]
    odd = requests.post(f"{qdrant.url}/collections/c/points/count?wait=maybe", json={}, headers=headers, timeout=5)
    assert odd.status_code == 400
    missing = requests.post(f"{qdrant.url}/collections/nope/points/count", json={}, headers=headers, timeout=5)
    assert missing.status_code == 404 and missing.json()["status"]["error"] == "Not found: Collection `nope` doesn't exist!"
    assert len(qdrant.problems) == 2 and "vectr" in qdrant.problems[0] and "wait" in qdrant.problems[1]
