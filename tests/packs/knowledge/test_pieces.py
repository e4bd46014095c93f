"""Pure pieces of the knowledge indexer: chunking, request batching, the local embedder and its settings."""

from __future__ import annotations

import itertools
import math

import pytest

from appliance.config import ConfigError
from appliance.kernel.contract.packs import load_settings
from appliance.packs.knowledge.chunking import chunk_document
from appliance.packs.knowledge.embedder import LocalEmbedder, requests_of
from appliance.packs.knowledge.store import point_id

BODY = "\n\n".join(" ".join(f"Sentence {p}.{s} talks about refunds and invoices number {p * 10 + s}."
                            for s in range(5)) for p in range(8))


@pytest.mark.parametrize(("size", "overlap"), [(100, 0), (200, 40), (400, 100), (1000, 200)])
def test_chunks_respect_size_and_overlap_and_cover_the_body(size, overlap):
    chunks = chunk_document("Billing", BODY, size, overlap)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(0 < len(c.text) <= size for c in chunks)
    assert all(c.embed_text == f"Billing\n\n{c.text}" for c in chunks)
    assert len(chunks) >= math.ceil(len(BODY) / size)
    words = set(BODY.split())
    assert words == {w for c in chunks for w in c.text.split()}, "every word of the body is in some chunk"
    for left, right in itertools.pairwise(chunks):
        shared = max((n for n in range(1, min(len(left.text), len(right.text)) + 1)
                      if left.text.endswith(right.text[:n])), default=0)
        assert shared <= overlap


@pytest.mark.parametrize(("title", "body", "expected"), [
    ("FAQ", "", ["FAQ"]),
    ("FAQ", "   \n ", ["FAQ"]),
    ("", "", []),
    ("  ", "Just a body.", ["Just a body."]),
])
def test_short_documents(title, body, expected):
    chunks = chunk_document(title, body, 200, 40)
    assert [c.text for c in chunks] == expected
    assert [c.embed_text for c in chunks] == expected


@pytest.mark.parametrize(("lengths", "max_inputs", "budget", "expected"), [
    ([10] * 5, 2, 1000, [2, 2, 1]),
    ([10] * 5, 10, 25, [2, 2, 1]),
    ([50, 5, 5], 10, 20, [1, 2]),  # a text longer than the budget still goes, alone
    ([], 10, 100, []),
])
def test_requests_stay_within_input_and_character_limits(lengths, max_inputs, budget, expected):
    texts = ["x" * n for n in lengths]
    requests = requests_of(texts, max_inputs, budget)
    assert [len(r) for r in requests] == expected
    assert [t for r in requests for t in r] == texts


def test_local_embedder_is_deterministic_normalised_and_lexical():
    embedder = LocalEmbedder(256)
    refund, refund_again, weather, empty = embedder.embed(
        ["Refunds for annual plans", "refunds for annual plans", "Rain expected in Pune", ""])
    assert refund == refund_again and len(refund) == 256
    assert math.isclose(sum(v * v for v in refund), 1.0, rel_tol=1e-5)
    assert math.isclose(sum(v * v for v in empty), 1.0, rel_tol=1e-5)
    query = embedder.embed(["annual refunds"])[0]
    def similarity(vector: list[float]) -> float:
        return sum(a * b for a, b in zip(query, vector, strict=True))

    assert similarity(refund) > similarity(weather)
    assert embedder.identity.describe() == "local-hash-v1 (local, 256 dimensions)"


def test_point_ids_are_stable_uuids_per_document_and_chunk():
    assert point_id(7, 0) == point_id(7, 0)
    assert len({point_id(7, 0), point_id(7, 1), point_id(70, 0), point_id(0, 70)}) == 4


def test_knowledge_settings_are_validated_together():
    with pytest.raises(ConfigError) as err:
        load_settings({"KNOWLEDGE_CHUNK_SIZE": "300", "KNOWLEDGE_CHUNK_OVERLAP": "300", "EMBEDDING_BATCH_SIZE": "5000",
                     "EMBEDDING_DIMENSIONS": "0", "QDRANT_PREFER_GRPC": "maybe"}, env_file=None)
    problems = "\n".join(err.value.problems)
    for name in ("KNOWLEDGE_CHUNK_OVERLAP", "EMBEDDING_BATCH_SIZE", "EMBEDDING_DIMENSIONS", "QDRANT_PREFER_GRPC"):
        assert name in problems
    config = load_settings({"KNOWLEDGE_CHUNK_SIZE": "300", "KNOWLEDGE_CHUNK_OVERLAP": "50"}, env_file=None).knowledge
    assert (config.chunk_size, config.chunk_overlap, config.local_embedder) == (300, 50, True)
    assert config.collection == "bharat_crm_knowledge" and config.embedding_dimensions == 1536


def test_without_an_api_key_the_local_embedder_is_used_and_says_so(caplog):
    from appliance.packs.knowledge.embedder import OpenAIEmbedder, make_breaker, make_embedder

    local = load_settings({}, env_file=None).knowledge
    with caplog.at_level("WARNING", logger="appliance.knowledge.embedder"):
        embedder = make_embedder(local, make_breaker(local))
    assert isinstance(embedder, LocalEmbedder) and embedder.identity.dimensions == 1536
    assert any("no OPENAI_API_KEY" in r.getMessage() and "local-hash-v1" in r.getMessage() for r in caplog.records)
    caplog.clear()
    remote = load_settings({"OPENAI_API_KEY": "sk-x"}, env_file=None).knowledge
    openai_embedder = make_embedder(remote, make_breaker(remote))
    assert isinstance(openai_embedder, OpenAIEmbedder) and not caplog.records
    openai_embedder.client.close()
