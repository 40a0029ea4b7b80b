"""The OpenAPI 3 description of the REST API, served at /openapi.json (tests check it against the routes, and
schemathesis checks the running server against it: tests/test_api_contract.py).

The parameters come from stream/api/params.py, which the handlers check requests against, and which routes
need the token from ``needs_token``, which the server's middleware asks: the description and the server
agree on those by construction. ``build(protect_reads)`` describes a server whose reads need the token too.
"""

from __future__ import annotations

import copy
from typing import Any

from stream.api.params import ALERT_ID, ALERTS_QUERY, OBJECT_ID, SCORE_QUERY

__all__ = ["OPEN_PATHS", "OPENAPI", "build", "needs_token"]

# Always open: liveness probes and this description carry nothing worth guarding.
OPEN_PATHS = ("/healthz", "/openapi.json", "/static")

_ERROR = {"description": "the request cannot be answered; the body says why",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_UNAUTHORIZED = {"description": "no token, or not the server's: send Authorization: Bearer <token>",
                 "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_FORBIDDEN = {"description": "the server has no token configured (SKYSTREAM_API_TOKEN or --token-file), so it "
              "scores nothing", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def needs_token(method: str, path: str, protect_reads: bool) -> bool:
    """Whether a request to the route ``path`` (its canonical form, /objects/{id}) needs the bearer token:
    scoring always; reads (JSON routes, web pages and their figures) when ``protect_reads``."""
    if method.upper() not in ("GET", "HEAD"):
        return True
    return protect_reads and not any(path == p or path.startswith(p + "/") for p in OPEN_PATHS)


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_BASE: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "SkyStream API", "version": "1",
             "description": "Score a file, read archived alerts, object histories and the model registry. "
             "Alerts and predictions have the fields of schemas/avro/alert.avsc and prediction.avsc. "
             "POST /score needs `Authorization: Bearer <token>` (SKYSTREAM_API_TOKEN); the reads need it too "
             "when the server protects them (SKYSTREAM_API_PROTECT_READS=1)."},
    "paths": {
        "/score": {"post": {
            "summary": "score one uploaded file (a SMASS-style spectrum table or a TESS light-curve FITS)",
            "description": "The same code path and JSON as `skystream score`, except `source`, which is "
            "upload://NAME (NAME: the upload's file name, or ?name=; a spectrum's object comes from it). "
            "The upload is scored in memory and never written to disk. Larger than the kind's "
            "SKYSTREAM_MAX_<KIND>_BYTES: 413.",
            "parameters": [p.spec() for p in SCORE_QUERY],
            "requestBody": {"required": True, "content": {
                # Only the file: the server ignores other fields, and a client has none to send.
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "string", "format": "binary"}}, "required": ["file"],
                    "additionalProperties": False}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "200": _json("the prediction", {"$ref": "#/components/schemas/Prediction"}),
                "400": _ERROR,
                "413": _json("the file is larger than its kind's limit (a Rejection), or the request larger than "
                             "every kind's (an Error)", {"$ref": "#/components/schemas/Rejection"}),
                "422": _json("the file cannot be scored (the same reasons as `skystream score`)",
                             {"$ref": "#/components/schemas/Rejection"}),
                "500": _json("an internal error while scoring", {"$ref": "#/components/schemas/Rejection"}),
            }}},
        "/alerts": {"get": {
            "summary": "archived alerts, newest first, through the filter language of docs/filters.md",
            "parameters": [p.spec() for p in ALERTS_QUERY],
            "responses": {"200": _json("matching alerts", {"type": "object", "properties": {
                "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
                "count": {"type": "integer"}}}), "400": _ERROR}}},
        "/alerts/{alert_id}/figure.png": {"get": {
            "summary": "an alert's diagnostic figure", "parameters": [ALERT_ID.spec()],
            "responses": {"200": {"description": "PNG", "content": {"image/png": {}}}, "400": _ERROR,
                          "404": _ERROR}}},
        "/objects/{id}": {"get": {
            "summary": "an object's archived predictions across sectors, files and model versions",
            "parameters": [OBJECT_ID.spec()],
            "responses": {"200": _json("its history", {"type": "object", "properties": {
                "object": {"type": "string"},
                "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
                "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}}}),
                "400": _ERROR, "404": _ERROR}}},
        "/models": {"get": {
            "summary": "each task's champion with its metrics, its promotion history and its versions",
            "responses": {"200": _json("the registry", {"type": "object", "properties": {
                "models": {"type": "array", "items": {"type": "object"}}}})}}},
        "/healthz": {"get": {"summary": "liveness", "responses": {
            "200": _json("alive", {"type": "object", "properties": {"status": {"type": "string"}}})}}},
        "/openapi.json": {"get": {"summary": "this description", "responses": {
            "200": _json("OpenAPI 3", {"type": "object"})}}},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Rejection": {"type": "object", "properties": {
            "source": {"type": "string"}, "rejected": {"type": "boolean"}, "reason": {"type": "string"},
            "error": {"type": "string"}}},
        "Prediction": {"type": "object", "description": "schemas/avro/prediction.avsc (without detected_at_ms)"},
        "Alert": {"type": "object", "description": "schemas/avro/alert.avsc; the figure as figure_url"},
    }},
}


def build(protect_reads: bool = False) -> dict[str, Any]:
    """The description of a server that guards its reads with the token too (``protect_reads``) or not."""
    spec = copy.deepcopy(_BASE)
    spec["components"]["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "the server's token (SKYSTREAM_API_TOKEN or `skystream api --token-file`)"}}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if needs_token(method, path, protect_reads):
                operation["security"] = [{"bearer": []}]
                operation["responses"]["401"] = _UNAUTHORIZED
                if method != "get":
                    operation["responses"]["403"] = _FORBIDDEN
            else:
                operation["security"] = []
    return spec


# The description with open reads (the default).
OPENAPI: dict[str, Any] = build()
