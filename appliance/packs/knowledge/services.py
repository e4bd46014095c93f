"""What the knowledge jobs keep in ``ctx.services`` (the dict the worker shares across runs).

The embedder and its circuit breaker live as long as the worker, so the breaker counts failures across
runs. A Qdrant server client is kept too; the embedded storage is opened for one run and closed after it
(dropping its file lock), so that ``appliance knowledge`` commands can open it between runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from appliance.config import Config
from appliance.packs.knowledge.embedder import Embedder, make_breaker, make_embedder
from appliance.packs.knowledge.store import KnowledgeStore, open_store, server_mode
from appliance.sdk import CircuitBreaker

if TYPE_CHECKING:
    from redis import Redis

BREAKER = "knowledge.breaker"
EMBEDDER = "knowledge.embedder"
STORE = "knowledge.store"
#: Optional ``callable(done_documents)`` called after each batch (the CLI's progress bar).
PROGRESS = "knowledge.progress"
#: (collection, embedder identity) this process has checked; until then even an idle run opens Qdrant.
CHECKED = "knowledge.checked"


def breaker(services: MutableMapping[str, Any], config: Config, client: Redis | None = None) -> CircuitBreaker:
    if BREAKER not in services:
        services[BREAKER] = make_breaker(config.knowledge, client)
    return services[BREAKER]


def embedder(services: MutableMapping[str, Any], config: Config, client: Redis | None = None) -> Embedder:
    """The kept embedder, made again if the embedding settings differ from those it was made with.
    ``client``: the Redis that holds its circuit breaker's state (shared across replicas)."""
    k = config.knowledge
    settings = (k.openai_api_key, k.openai_base_url, k.embedding_model, k.embedding_dimensions)
    kept = services.get(EMBEDDER)
    if kept is None or kept[0] != settings:
        kept = services[EMBEDDER] = (settings, make_embedder(k, breaker(services, config, client)))
    return kept[1]


@contextmanager
def store(services: MutableMapping[str, Any], config: Config) -> Iterator[KnowledgeStore]:
    """The Qdrant store for one run: the kept server client, or embedded storage opened until the block ends."""
    if server_mode(config):
        if STORE not in services:
            services[STORE] = open_store(config)
        yield services[STORE]
        return
    with open_store(config) as opened:
        yield opened


def progress(services: MutableMapping[str, Any]) -> Callable[[int], None]:
    return services.get(PROGRESS) or (lambda done: None)
