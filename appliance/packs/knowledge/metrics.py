"""The knowledge pack's own metrics, made on their first use (``appliance.sdk.lazy_metric``)."""

from appliance.sdk import lazy_metric

EMBEDDING_TOKENS = lazy_metric("Counter", "appliance_embedding_tokens", "Tokens sent to the embeddings API.",
                               ("model",))
