"""The OpenAPI 3 description of the REST API, served at /openapi.json (tests check it against the routes)."""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI"]

_ERROR = {"description": "the request cannot be answered; the body says why",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_OBJECT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "a TIC id (TIC 25155310 or 25155310), an asteroid number (4) or designation (1996 UK)"}
_ALERT_ID = {"name": "alert_id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "SkyStream API", "version": "1",
             "description": "Score a file, read archived alerts, object histories and the model registry. "
             "Alerts and predictions have the fields of schemas/avro/alert.avsc and prediction.avsc."},
    "paths": {
        "/score": {"post": {
            "summary": "score one uploaded file (a SMASS-style spectrum table or a TESS light-curve FITS)",
            "description": "The same code path and JSON as `skystream score`, except `source`, which is "
            "upload://NAME (NAME: the upload's file name, or ?name=; a spectrum's object comes from it). "
            "The upload is scored in memory and never written to disk. Larger than the kind's "
            "SKYSTREAM_MAX_<KIND>_BYTES: 413.",
            "parameters": [_query("name", "the file's name when the body is raw bytes (default: upload)")],
            "requestBody": {"required": True, "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "200": _json("the prediction", {"$ref": "#/components/schemas/Prediction"}),
                "400": _ERROR,
                "413": _json("the file is larger than its kind's limit", {"$ref": "#/components/schemas/Rejection"}),
                "422": _json("the file cannot be scored (the same reasons as `skystream score`)",
                             {"$ref": "#/components/schemas/Rejection"}),
                "500": _json("an internal error while scoring", {"$ref": "#/components/schemas/Rejection"}),
            }}},
        "/alerts": {"get": {
            "summary": "archived alerts, newest first, through the filter language of docs/filters.md",
            "parameters": [
                _query("kind", "lightcurve or spectrum (repeat or comma-separate for several)"),
                _query("reason", "planet-candidate, known-planet-candidate, rare-composition (several: as kind)"),
                _query("min_score", "only alerts with score >= this", {"type": "number"}),
                _query("object", "only this object (several: as kind)"),
                _query("cone", "ra,dec,radius_deg in ICRS degrees"),
                _query("since", "a duration back from now (30m, 2h, 3d) or an ISO 8601 time with zone"),
                _query("limit", "at most this many (1-1000, default 100)", {"type": "integer"}),
            ],
            "responses": {"200": _json("matching alerts", {"type": "object", "properties": {
                "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
                "count": {"type": "integer"}}}), "400": _ERROR}}},
        "/alerts/{alert_id}/figure.png": {"get": {
            "summary": "an alert's diagnostic figure", "parameters": [_ALERT_ID],
            "responses": {"200": {"description": "PNG", "content": {"image/png": {}}}, "400": _ERROR,
                          "404": _ERROR}}},
        "/objects/{id}": {"get": {
            "summary": "an object's archived predictions across sectors, files and model versions",
            "parameters": [_OBJECT_ID],
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
