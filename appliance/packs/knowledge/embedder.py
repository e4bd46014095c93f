"""Turning texts into vectors: OpenAI's embeddings API, or a local deterministic embedder when no API key is set.

Both return one vector of ``dimensions`` floats per input, in input order. The local embedder needs no
download and no network (the appliance runs offline with it); its vectors are lexical (hashed words and word
pairs), good for finding documents that share words, not for meaning. A collection records which embedder
filled it (``Identity``), so vectors of different embedders are never mixed.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from appliance.packs.knowledge import metrics
from appliance.packs.knowledge.settings import LOCAL_MODEL, KnowledgeConfig
from appliance.sdk import ApplianceError, CircuitBreaker

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("appliance.knowledge.embedder")

#: Characters sent in one request at most: the API accepts 300,000 tokens per request, and even dense text
#: has more than two characters per token.
REQUEST_CHAR_BUDGET = 600_000
_WORD = re.compile(r"\w+", re.UNICODE)


class EmbeddingRejected(ApplianceError):
    """The provider refused these inputs (HTTP 400 or 422): the inputs are at fault, not the provider."""


class EmbeddingUnavailable(ApplianceError):
    """The provider failed after its retries (5xx, 429, timeouts, refused connections) or its circuit is open."""


@dataclass(frozen=True)
class Identity:
    """What fills a collection: ``kind`` is ``openai`` or ``local``."""

    kind: str
    model: str
    dimensions: int

    def describe(self) -> str:
        return f"{self.model} ({self.kind}, {self.dimensions} dimensions)"


class Embedder(Protocol):
    identity: Identity

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""


class LocalEmbedder:
    """Feature hashing of lower-cased words and adjacent word pairs into ``dimensions`` signed buckets,
    L2-normalised. Deterministic across processes and machines (blake2b, not Python's salted ``hash``)."""

    def __init__(self, dimensions: int):
        self.identity = Identity("local", LOCAL_MODEL, dimensions)
        self.dimensions = dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._one(text).tolist() for text in texts]

    def _one(self, text: str) -> np.ndarray:
        words = _WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        vector = np.zeros(self.dimensions, dtype=np.float32)
        if not features:
            vector[0] = 1.0  # cosine distance is undefined for a zero vector
            return vector
        hashes = np.fromiter(
            (int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little") for f in features),
            dtype=np.uint64, count=len(features),
        )
        buckets = (hashes % np.uint64(self.dimensions)).astype(np.int64)
        signs = np.where((hashes >> np.uint64(63)) == 1, 1.0, -1.0).astype(np.float32)
        np.add.at(vector, buckets, signs)
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            vector[0] = 1.0
            return vector
        return vector / norm


class OpenAIEmbedder:
    """The ``openai`` client against ``OPENAI_BASE_URL`` (any OpenAI-compatible server).

    Retries on 408, 409, 429 and 5xx are the client's own (``EMBEDDING_MAX_RETRIES``, exponential backoff,
    ``Retry-After`` honoured up to two minutes). A request that still fails counts as one failure of the
    circuit breaker; when the breaker is open, calls fail at once with ``EmbeddingUnavailable``.
    """

    def __init__(self, config: KnowledgeConfig, breaker: CircuitBreaker, client=None):
        import openai  # a second to import: only the OpenAI embedder needs it, not the offline one

        self.identity = Identity("openai", config.embedding_model, config.embedding_dimensions)
        self.batch_size = config.embedding_batch_size
        self.breaker = breaker
        self.client = client or openai.OpenAI(
            api_key=config.openai_api_key, base_url=config.openai_base_url,
            max_retries=config.embedding_max_retries, timeout=config.embedding_timeout,
        )
        # Only the text-embedding-3 family accepts a requested size; others answer with their native size,
        # which is checked against EMBEDDING_DIMENSIONS below.
        self._send_dimensions = config.embedding_model.startswith("text-embedding-3")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for request in requests_of(texts, self.batch_size, REQUEST_CHAR_BUDGET):
            vectors.extend(self._request(request))
        return vectors

    def _request(self, inputs: list[str]) -> list[list[float]]:
        import openai  # as in __init__

        model = self.identity.model
        extra: dict[str, Any] = {"dimensions": self.identity.dimensions} if self._send_dimensions else {}
        try:
            self.breaker.before_call()
        except ApplianceError as exc:
            raise EmbeddingUnavailable(str(exc)) from None
        try:
            response = self.client.embeddings.create(model=model, input=inputs, encoding_format="float", **extra)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            self.breaker.record_success()  # the provider answered: it is up
            raise EmbeddingRejected(f"embeddings API refused the input: {_message(exc)}") from None
        except openai.OpenAIError as exc:
            self.breaker.record_failure()
            status = getattr(exc, "status_code", None)
            raise EmbeddingUnavailable(f"embeddings API failed: {type(exc).__name__}"
                                       f"{f' (HTTP {status})' if status else ''}: {_message(exc)}") from None
        self.breaker.record_success()
        if response.usage is not None:
            metrics.EMBEDDING_TOKENS.labels(model).inc(response.usage.total_tokens)
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(inputs):
            raise EmbeddingUnavailable(f"embeddings API returned {len(data)} vectors for {len(inputs)} inputs")
        size = len(data[0].embedding) if data else self.identity.dimensions
        if size != self.identity.dimensions:
            raise EmbeddingUnavailable(
                f"model {model} returns vectors of size {size} but EMBEDDING_DIMENSIONS is "
                f"{self.identity.dimensions}: set EMBEDDING_DIMENSIONS={size} (and a new QDRANT_COLLECTION)")
        return [list(item.embedding) for item in data]


def requests_of(texts: Sequence[str], max_inputs: int, char_budget: int) -> list[list[str]]:
    """``texts`` cut into consecutive requests of at most ``max_inputs`` inputs and ``char_budget``
    characters (a single longer text still goes alone)."""
    requests: list[list[str]] = []
    current: list[str] = []
    chars = 0
    for text in texts:
        if current and (len(current) >= max_inputs or chars + len(text) > char_budget):
            requests.append(current)
            current, chars = [], 0
        current.append(text)
        chars += len(text)
    if current:
        requests.append(current)
    return requests


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(exc)


def make_embedder(config: KnowledgeConfig, breaker: CircuitBreaker) -> Embedder:
    """The OpenAI embedder when ``OPENAI_API_KEY`` is set, otherwise the local one (logged once here)."""
    if config.local_embedder:
        log.warning("no OPENAI_API_KEY: embedding with the local deterministic embedder %s (offline, "
                    "word-based similarity only)", LOCAL_MODEL)
        return LocalEmbedder(config.embedding_dimensions)
    return OpenAIEmbedder(config, breaker)


def make_breaker(config: KnowledgeConfig, client: Redis | None = None) -> CircuitBreaker:
    """The embeddings API's breaker; with ``client`` its state is shared by every run and replica."""
    return CircuitBreaker("embeddings", threshold=config.breaker_threshold, reset_after=config.breaker_reset,
                          client=client)
