"""The OpenAPI document's error answers and links, declared once for every route."""
from __future__ import annotations

from service.contracts import ErrorOut

_WHY = {
    401: "Missing, malformed or revoked API key",
    404: "No such object for this owner",
    409: "Conflicts with the object's state",
    413: "Body over the size limit (an upload: W1_MAX_UPLOAD_BYTES; a JSON body: W1_MAX_JSON_BYTES)",
    422: "Invalid body, parameter, content or reference (a malformed JSON body too)",
    429: "Too many unfinished jobs for this owner",
    503: "Server busy or database unavailable; retry after the Retry-After header's seconds",
}


def links(param: str, *operation_ids: str) -> dict:
    """OpenAPI links from a created object's ``id`` to the operations that take it as ``param``."""
    return {op: {"operationId": op, "parameters": {param: "$response.body#/id"}} for op in operation_ids}


def errors(*codes: int, json_content: bool = False) -> dict:
    """OpenAPI ``responses`` for these error statuses, all with the one error model.
    ``json_content``: spell the JSON content out, for routes whose own answer is not JSON."""
    out = {}
    for code in codes:
        entry: dict = {"description": _WHY[code]}
        if code in (429, 503):
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
        if json_content:
            entry["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        else:
            entry["model"] = ErrorOut
        out[code] = entry
    return out
