"""The HTTP API's route keys, in plain Python: the RealtimeApi stack declares them and the local front enforces them.

API Gateway answers a request that matches no route itself (404 `{"message":"Not Found"}`) without invoking any
function, so the local front must know the same routes to be as strict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Server-level routes of the Open Inference Protocol plus the API description; any model function answers them.
SERVER_ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/v2", ("GET",)),
    ("/v2/health/live", ("GET",)),
    ("/v2/health/ready", ("GET",)),
    ("/openapi.json", ("GET",)),
)


def model_routes(name: str) -> list[tuple[str, tuple[str, ...]]]:
    """The v2 (Open Inference Protocol) and v1 (KServe) paths of one model, with the methods each accepts."""
    return [
        (f"/v2/models/{name}", ("GET",)),
        (f"/v2/models/{name}/versions/{{version}}/infer", ("POST",)),  # any registered version, by path
        (f"/v2/models/{name}/{{proxy+}}", ("GET", "POST")),
        (f"/v1/models/{name}", ("GET",)),
        (f"/v1/models/{name}:predict", ("POST",)),
    ]


def route_keys(models: Iterable[str]) -> list[str]:
    """Every route key ("METHOD /path") of an API serving `models`."""
    routes = [route for name in models for route in model_routes(name)] + list(SERVER_ROUTES)
    return [f"{method} {path}" for path, methods in routes for method in methods]


def _pattern(path: str) -> re.Pattern[str]:
    """A route path as API Gateway matches it: literal segments, `{name}` one segment, `{proxy+}` greedy over one or
    more segments."""
    escaped = re.escape(path).replace(re.escape("{proxy+}"), ".+")
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", escaped) + "$")


def match_route(keys: Iterable[str], method: str, path: str) -> str | None:
    """The route key API Gateway picks for a request, or None: the most specific one, i.e. a literal path first,
    then a path with variables, then the longest greedy path."""
    candidates = [key for key in keys if key.split(" ", 1)[0] == method.upper()]
    literal = [key for key in candidates if key.split(" ", 1)[1] == path]
    if literal:
        return literal[0]
    matching = [key for key in candidates if "{" in key and _pattern(key.split(" ", 1)[1]).match(path)]
    variables = [key for key in matching if "{proxy+}" not in key]
    if variables:
        return variables[0]
    return max(matching, key=len) if matching else None
