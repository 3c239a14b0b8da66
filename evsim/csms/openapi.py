"""The OpenAPI 3.0 description of the control API (``GET /api/v1/openapi.json``): every route,
and for each message the central system may send its own path, with the request and answer
schemas the ``ocpp`` library ships for OCPP 1.6 (so the description and the check agree).
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import ocpp

from evsim.csms.actions import ACTIONS, PROFILE_OF

SCHEMAS = Path(ocpp.__file__).parent / "v16" / "schemas"
PREFIX = "/api/v1"
CP_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "the charge point id (the last segment of its OCPP URL)"}
ID_TAG = {"name": "idTag", "in": "path", "required": True,
          "schema": {"type": "string", "maxLength": 20}}
ERROR = {"type": "object", "required": ["status", "reason"],
         "properties": {"status": {"type": "string"}, "reason": {"type": "string"}}}
TAG = {"type": "object", "properties": {
    "idTag": {"type": "string"},
    "status": {"type": "string", "enum": ["Accepted", "Blocked", "Expired", "Invalid"]},
    "expiryDate": {"type": "string", "format": "date-time", "nullable": True},
    "parentIdTag": {"type": "string", "nullable": True}}}
TAG_CHANGE = {"type": "object", "additionalProperties": False, "properties": {
    name: value for name, value in TAG["properties"].items() if name != "idTag"}}
CHARGE_POINT = {"type": "object", "properties": {
    "id": {"type": "string"}, "connected": {"type": "boolean"}, "booted": {"type": "boolean"},
    "boot": {"type": "object", "nullable": True,
             "description": "the last BootNotification's payload, and when"},
    "connectors": {"type": "object", "additionalProperties": {"type": "object"},
                   "description": "connector id -> its last StatusNotification, and when"},
    "transactionId": {"type": "integer", "nullable": True,
                      "description": "the open transaction"},
    "lastMessage": {"type": "object", "nullable": True,
                    "description": "action, messageType, direction and time of the last frame"},
    "reports": {"type": "object", "description": "action -> the last firmware, diagnostics, "
                                                 "log or security notification"},
    "scenario": {"type": "object", "description": "name, paused, running, stepsDone"}}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: dict[str, Any] = ERROR) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _errors(*codes: str) -> dict[str, Any]:
    reasons = {"400": "the body is not valid (the reason says where); nothing was sent",
               "401": "the bearer token is missing or wrong (with --api-token)",
               "404": "unknown action, charge point, or id tag; or the charge point is not "
                      "connected",
               "502": "the charge point answered with a CALLERROR (errorCode, errorDescription, "
                      "errorDetails), broke the answer's schema, or disconnected",
               "504": "the charge point did not answer in time"}
    return {code: _answer(reasons[code]) for code in ("401", *codes)}


@cache
def ocpp_schema(name: str) -> dict[str, Any]:
    """A 1.6 JSON schema of the library, without the draft's own keywords."""
    schema = json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))
    return {key: value for key, value in schema.items() if key not in ("$schema", "$id", "id")}


def _send(name: str, action: str) -> dict[str, Any]:
    profile = PROFILE_OF[action]
    accepted = {"type": "object", "properties": {"status": {"type": "string",
                                                            "enum": ["accepted"]},
                                                 "response": ocpp_schema(f"{action}Response")}}
    return {"post": {
        "tags": [f"OCPP {profile}"], "operationId": name.replace("-", "_"),
        "summary": f"Send {action} ({profile} profile) and wait for the answer",
        "parameters": [CP_ID],
        "requestBody": {"required": True, "description": f"the {action} payload as OCPP 1.6 "
                                                         f"writes it (camelCase)",
                        "content": _json(ocpp_schema(action))},
        "responses": {"200": _answer("the CALLRESULT payload", accepted),
                      **_errors("400", "404", "502", "504")}}}


@cache
def document() -> dict[str, Any]:
    cp = PREFIX + "/charge-points/{id}"
    paths: dict[str, Any] = {
        PREFIX + "/openapi.json": {"get": {
            "summary": "This description", "responses": {"200": {"description": "OpenAPI 3.0"},
                                                          **_errors()}}},
        PREFIX + "/charge-points": {"get": {
            "summary": "Every known charge point",
            "responses": {"200": _answer("the charge points", {
                "type": "object", "properties": {"chargePoints": {
                    "type": "array", "items": CHARGE_POINT}}}), **_errors()}}},
        cp: {"get": {"summary": "One charge point", "parameters": [CP_ID],
                     "responses": {"200": _answer("the charge point", CHARGE_POINT),
                                   **_errors("404")}}},
        cp + "/authorization-key": {"put": {
            "summary": "Set the AuthorizationKey the registry expects, without telling the "
                       "charge point (security profiles 1 and 2); never recorded",
            "parameters": [CP_ID],
            "requestBody": {"required": True, "content": _json({
                "type": "object", "required": ["authorizationKey"],
                "additionalProperties": False,
                "properties": {"authorizationKey": {"type": "string"}}})},
            "responses": {"200": {"description": "the registry expects the new key"},
                          **_errors("400", "404")}}},
        PREFIX + "/id-tags": {"get": {
            "summary": "The id-tag list, and whether it is in force",
            "responses": {"200": _answer("the id tags", {
                "type": "object", "properties": {"enforced": {"type": "boolean"},
                                                 "idTags": {"type": "array", "items": TAG}}}),
                **_errors()}}},
        PREFIX + "/id-tags/{idTag}": {
            "get": {"summary": "One id tag", "parameters": [ID_TAG],
                    "responses": {"200": _answer("the id tag", TAG), **_errors("404")}},
            "put": {"summary": "Create or change an id tag (fields not given are kept; null "
                               "clears); stored in the MemoryBank",
                    "parameters": [ID_TAG],
                    "requestBody": {"required": False, "content": _json(TAG_CHANGE)},
                    "responses": {"200": {"description": "changed"},
                                  "201": {"description": "created"}, **_errors("400")}},
            "delete": {"summary": "Remove an id tag", "parameters": [ID_TAG],
                       "responses": {"200": {"description": "removed"}, **_errors("404")}}},
    }
    for change in ("pause", "resume"):
        paths[f"{cp}/scenario/{change}"] = {"post": {
            "summary": f"{change.capitalize()} the scenario on this charge point",
            "parameters": [CP_ID],
            "responses": {"200": {"description": f"{change}d"}, **_errors("404")}}}
    for name, action in sorted(ACTIONS.items()):
        paths[f"{cp}/{name}"] = _send(name, action)
    return {
        "openapi": "3.0.3",
        "info": {"title": "EV charging site simulator: central system control API",
                 "version": "1",
                 "description": "Drive csms.py by hand: send any OCPP 1.6J message to a "
                                "connected charge point, read the charge points' state, and "
                                "keep the id-tag list. Every call is recorded as an API_CALL "
                                "event in the MemoryBank."},
        "components": {"securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "required when csms.py runs with --api-token or EV_SIM_API_TOKEN"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }
