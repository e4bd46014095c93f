"""The knowledge pack: documents embedded into the appliance's Qdrant (docs/knowledge.md).

Its settings (``config.knowledge``), the indexer and snapshot jobs, ``appliance knowledge``, the
``knowledge`` section of ``/health`` (which embedder and which Qdrant are in use) and its collection's part of
``appliance backup``, registered in ``PACK``.
"""

from appliance.packs.knowledge.settings import load_knowledge
from appliance.packs.knowledge.status import knowledge_status
from appliance.sdk import Pack

PACK = Pack(
    name="knowledge",
    settings=load_knowledge,
    jobs="appliance.packs.knowledge.jobs:JOBS",
    commands="appliance.packs.knowledge.commands:register",
    health=knowledge_status,
    migrations="appliance.packs.knowledge",
    backup="appliance.packs.knowledge.backup:PART",
)
