"""Every route of the sidecar as real requests, for sweeps that must cover each endpoint (a new route is
swept the day it is added)."""

from __future__ import annotations

import re

import httpx

from appliance.config import Config
from appliance.sidecar import create_app


def every_request(config: Config, values: dict[str, str]) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, with ``values`` in place of the URL variables (``name``,
    ``dead_id``, ``filename``); a variable not given is replaced by its own name (an unknown id: a 404)."""
    app = create_app(config)
    try:
        rules = list(app.url_map.iter_rules())
    finally:
        app.extensions["appliance"].close()
    result = []
    for rule in rules:
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values.get(m.group(1), m.group(1)), rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            result.append((method, path))
    return result


def sweep(url: str, requests: list[tuple[str, str]], credentials: list[dict[str, str]]) -> list[str]:
    """Each request with each set of headers; one text per answer: request, status, headers and body."""
    outputs = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for headers in credentials:
            for method, path in requests:
                response = http.request(method, path, headers=headers)
                outputs.append(f"{method} {path} {response.status_code} {dict(response.headers)}\n{response.text}")
    return outputs
