"""The OpenAPI 3.1 document of the REST API, and the request validation that uses the same schemas.

Request bodies are validated against the very schemas this document publishes (``validate``), so
what the document says a handler accepts is what it accepts. docs/api.md is the prose of the same
contract; tests/server/test_openapi.py drives schemathesis against this document.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from burstlab.wire import (
    BudgetStatus,
    ExecResult,
    Execution,
    ExecutionError,
    FileEvent,
    MapRecord,
    Output,
    SandboxRecord,
    SessionIsolation,
    SessionRecord,
    UsageRecord,
)

from .bounds import NonFinite
from .errors import BadRequest
from .maxima import Maxima

_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": extra}
    out["required"] = sorted(props) if required is None else required
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# -- request bodies (validated by the handlers with exactly these) --------------------------------

MIN_MEMORY = 64 * 1024**2
_NOTEBOOK = {"type": "string", "maxLength": 512, "description": "what usage is attributed to (default: the API)"}


@functools.lru_cache(maxsize=8)
def request_schemas(maxima: Maxima = Maxima()) -> dict[str, dict[str, Any]]:
    """The request bodies, bounded by this service's maxima."""
    from burstlab.workspace import MIN_CPUS  # loads the sandbox package: only when a document is made

    m = maxima
    timeout = {"type": "number", "exclusiveMinimum": 0, "maximum": m.timeout,
               "description": f"seconds, at most {m.timeout:g}"}
    return {
        "SessionCreate": _obj({
            "gpu": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 200},
                              {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200},
                               "minItems": 1, "maxItems": 16}],
                    "description": 'a GPU spec: "H100", "H100:2", or fallbacks ["H100", "A100"]; a type this '
                                   "workspace does not have is a 400"},
            "wait": {"type": "number", "minimum": 0, "maximum": m.wait,
                     "description": f"seconds to queue for a free GPU, at most {m.wait:g} (default 0: 409 at once)"},
            "notebook": _NOTEBOOK,
        }, required=["gpu"]),
        "SandboxCreate": _obj({
            "timeout": {**timeout, "description": f"seconds per run, at most {m.timeout:g}"},
            "memory": {"anyOf": [{"type": "integer", "minimum": MIN_MEMORY, "maximum": m.memory},
                                 {"type": "string", "minLength": 1, "maxLength": 64}],
                       "description": f'bytes, or a size such as "512MiB"; from 64 MiB to {m.memory} bytes'},
            "network": {"type": "boolean"} if m.network else {"type": "boolean", "enum": [False],
                                                              "description": "this service gives no network"},
            "pids": {"type": "integer", "minimum": 16, "maximum": m.pids},
            "cpus": {"type": "number", "minimum": MIN_CPUS, "maximum": m.cpus},
            "lifetime": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e9,
                         "description": "seconds: the sandbox closes at this age (default: none)"},
            "lifetime_action": {"type": "string", "enum": ["close", "pause"],
                                "description": "what the lifetime's end does: close (the default) or pause (state "
                                               "paused; the next use resumes it, saying so)"},
            "notebook": _NOTEBOOK,
            "template": {"type": "string", "maxLength": 64,
                         "description": "a template id of yours (POST templates): the sandbox starts in its state, "
                                        "with its limits (then only lifetime and notebook may be given)"},
            "env": {"type": "object", "maxProperties": 64, "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                                                                             "maxLength": 256},
                    "additionalProperties": {"type": "string"},
                    "description": "environment variables of the sandbox's kernel (not PATH, HOME or burstlab's own)"},
            "secrets": {"type": "object", "maxProperties": 64, "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                                                                                 "maxLength": 256},
                        "additionalProperties": {"type": "string"},
                        "description": "as env, with values redacted in every output, error and record ('[redacted]'); "
                                       "never answered back"},
        }, required=[]),
        "TemplateCreate": _obj({
            "files": {"type": "object", "maxProperties": 1000,
                      "additionalProperties": {"type": "string", "maxLength": m.body},
                      "description": "text files by path relative to the work dir (UTF-8)"},
            "packages": {"type": "array", "maxItems": 100, "items": {"type": "string", "minLength": 1, "maxLength": 200},
                         "description": "modules that must import in the sandbox (from the service's environment)"},
            "setup": {"type": "string", "description": "a cell run once, at build; its variables are in every sandbox"},
            "timeout": {**timeout, "description": f"seconds per run (and for the build), at most {m.timeout:g}"},
            "memory": {"anyOf": [{"type": "integer", "minimum": MIN_MEMORY, "maximum": m.memory},
                                 {"type": "string", "minLength": 1, "maxLength": 64}],
                       "description": f'bytes, or a size such as "512MiB"; from 64 MiB to {m.memory} bytes'},
            "warm": {"type": "integer", "minimum": 0, "maximum": 2,
                     "description": "sandboxes kept ready in the template's state (default 1)"},
            "notebook": _NOTEBOOK,
        }, required=[]),
        "ExecuteRequest": _obj({"code": {"type": "string"},
                                "timeout": {"anyOf": [timeout, {"type": "null"}],
                                            "description": "seconds; null: the sandbox's own timeout (sessions: none)"}},
                               required=["code"]),
        "ExecRequest": _obj({
            "cmd": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 100_000},
                              {"type": "array", "items": {"type": "string", "maxLength": 100_000},
                               "minItems": 1, "maxItems": 1000}],
                    "description": 'the argument list, e.g. ["ls", "-la"]; with shell=true one command line'},
            "shell": {"type": "boolean", "description": "run cmd (a string) with /bin/sh -c (default false)"},
            "timeout": {"anyOf": [timeout, {"type": "null"}],
                        "description": "seconds; null: the sandbox's own timeout"},
            "stream": {"type": "boolean", "description": "true: answer application/x-ndjson ExecEvents as output "
                                                         "arrives (as does Accept: application/x-ndjson)"},
        }, required=["cmd"]),
        "SnapshotRequest": _obj({"mode": {"type": "string", "enum": ["criu", "namespace"],
                                          "description": "criu (the default: refused with 409 where CRIU cannot run) "
                                                         "or namespace (picklable variables, work dir, limits)"}},
                                required=[]),
        "BudgetSet": _obj({
            "limit_usd": {"type": "number", "minimum": 0.000001, "maximum": 1e9},
            "soft_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "period": {"type": "string", "enum": ["", "day", "week", "month"]},
        }, required=["limit_usd"]),
    }


# -- responses --------------------------------------------------------------------------------------

RESPONSES: dict[str, dict[str, Any]] = {
    "Error": _obj({"message": _STR, "reason": _nullable(_STR)}, required=["message"], extra=True),
    "Workspace": _obj({"user": _STR, "version": _STR, "scheduler": _nullable(_STR),
                       "ledger": {"type": "string", "enum": ["sqlite", "postgresql"]}, "idle_timeout": _NUM,
                       "isolate_sessions": _ref("SessionIsolation")}),
    "SessionIsolation": SessionIsolation.json_schema(),
    "Host": _obj({"type": _STR, "host": _STR, "count": _INT, "free": _INT,
                  "source": {"type": "string", "enum": ["nvml", "declared", "dask"]}, "declared": _BOOL,
                  "microusd_per_hour": _INT}),
    "Hosts": _obj({"hosts": {"type": "array", "items": _ref("Host")}}),
    # The records are burstlab.wire's: their schemas are derived from the dataclasses, never written twice.
    "Session": SessionRecord.json_schema(),
    "Sessions": _obj({"sessions": {"type": "array", "items": _ref("Session")}}),
    "Limits": _obj({**{k: (_NUM if k in ("timeout", "cpus") else _INT) for k in
                       ("timeout", "memory", "pids", "cpus", "output", "work_size", "tmp_size", "max_upload",
                        "max_download")},
                    "lifetime": _nullable(_NUM), "expires_in": _nullable(_NUM),
                    "lifetime_action": {"type": "string", "enum": ["close", "pause"]}}),
    "Snapshot": _obj({"id": _STR, "user": _STR, "created": _NUM, "mode": _STR, "size_bytes": _INT,
                      "captured": {"type": "array", "items": _STR},
                      "not_captured": {"type": "object", "additionalProperties": _STR},
                      "limits": {"type": "object"}, "network": {}}),
    "Snapshots": _obj({"snapshots": {"type": "array", "items": _ref("Snapshot")}}),
    "Metrics": _obj({"interval_s": _NUM, "samples": {"type": "array", "items": _obj(
        {"t": _NUM, "cpu_s": _NUM, "memory_bytes": _INT, "pids": _INT, "output_bytes": _INT})}}),
    "Sandbox": SandboxRecord.json_schema(),
    "Sandboxes": _obj({"sandboxes": {"type": "array", "items": _ref("Sandbox")}}),
    "Output": Output.json_schema(),
    "ExecutionError": ExecutionError.json_schema(),
    "Execution": Execution.json_schema(),
    "ExecResult": ExecResult.json_schema(),
    # One line of an NDJSON stream (application/x-ndjson): execute's and exec's, and a watch's.
    "ExecEvent": {"oneOf": [
        _obj({"event": {"type": "string", "enum": ["output"]}, "output": _ref("Output")}),
        _obj({"event": {"type": "string", "enum": ["done"]}, "execution": _ref("Execution")}),
        _obj({"event": {"type": "string", "enum": ["done"]}, "result": _ref("ExecResult")}),
        _obj({"event": {"type": "string", "enum": ["error"]}, "message": _STR})]},
    "FileEvent": FileEvent.json_schema(),
    "Template": _obj({"id": _STR, "user": _STR, "files": {"type": "object", "additionalProperties": _INT},
                      "packages": {"type": "array", "items": _STR}, "setup": _STR,
                      "limits": _obj({"timeout": _NUM, "memory": _INT}), "created": _NUM, "warm": _INT}),
    "Templates": _obj({"templates": {"type": "array", "items": _ref("Template")}}),
    "FileEntry": _obj({"name": _STR, "type": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
                       "size": _INT}),
    "Directory": _obj({"entries": {"type": "array", "items": _ref("FileEntry")}}),
    "FileWritten": _obj({"path": _STR, "size": _INT}),
    "FileRemoved": _obj({"path": _STR, "removed": _BOOL}),
    "Map": MapRecord.json_schema(),
    "Maps": _obj({"maps": {"type": "array", "items": _ref("Map")}}),
    "UsageRecord": UsageRecord.json_schema(),
    "Usage": _obj({
        "records": {"type": "array", "items": _ref("UsageRecord")},
        "totals": _obj({"billed_s": _INT, "cost_microusd": _INT,
                        **{k: {"type": "object", "additionalProperties": _INT}
                           for k in ("by_kind", "by_notebook", "by_day")}}),
    }),
    "Budget": BudgetStatus.json_schema(),
    "Budgets": _obj({"budgets": {"type": "array", "items": _ref("Budget")}}),
}


def validate(name: str, body: Any, maxima: Maxima = Maxima()) -> dict[str, Any]:
    """``body`` checked against request schema ``name``; raises BadRequest naming the first problem."""
    import jsonschema

    schema = request_schemas(maxima)[name]
    validator = jsonschema.Draft202012Validator(schema)
    err = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path)[:200] or "body"
        if len(err.absolute_path) > 1 and err.absolute_path[0] == "secrets":  # never quote a secret's value
            raise BadRequest(f"{where}: a secret's value must be a string (the value is not shown).")
        message = err.message if len(err.message) <= 300 else err.message[:300] + "..."  # it quotes the value
        if err.validator == "additionalProperties":
            allowed = ", ".join(sorted(schema["properties"]))
            raise BadRequest(f"{where}: {message}; the fields are: {allowed}.")
        if err.validator == "required":
            raise BadRequest(f"{where}: {message}.")
        if err.validator == "type" and where == "body":
            raise BadRequest(f"The body must be a JSON object ({message}).")
        field = schema["properties"].get(str(err.absolute_path[0])) if err.absolute_path else None
        hint = (field or {}).get("description")
        if isinstance(err.instance, NonFinite):
            raise BadRequest(f"{where}: {err.instance!r} is not a finite number" + (f" ({hint})" if hint else "") + ".")
        raise BadRequest(f"{where}: {message}" + (f" ({hint})" if hint else "") + ".")
    return body


# -- the document -----------------------------------------------------------------------------------


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed JSON, a missing, wrongly typed or unknown field, a limit above the maximum",
            402: "a budget refuses", 403: "no valid token", 404: "unknown id, or another user's",
            409: "no capacity", 413: "body too large"}
    return {str(c): _json(_ref("Error"), text[c]) for c in (403, *codes)}


def _NDJSON_OF(name: str) -> dict[str, Any]:  # noqa: N802 - reads as the media type it describes
    """An application/x-ndjson body: a string to OpenAPI 3.1, each of its lines a ``name`` (``x-item-schema``)."""
    return {"schema": {"type": "string", "description": f"one JSON {name} per line"}, "x-item-schema": _ref(name)}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_FILE = _ID + [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "a path relative to the sandbox's work dir"}]
_BUDGET = [{"name": "scope", "in": "path", "required": True, "schema": {"type": "string", "enum": ["user", "notebook"]},
            "description": "user (name: your user name) or notebook"},
           {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]


def _paths(maxima: Maxima = Maxima()) -> dict[str, Any]:
    ok = _json
    return {
        "/workspace": {"get": {"summary": "The workspace: user, version, Dask scheduler address (the operator's only)",
                               "responses": {"200": ok(_ref("Workspace")), **_errors()}}},
        "/hosts": {"get": {"summary": "GPU inventory", "responses": {"200": ok(_ref("Hosts")), **_errors()}}},
        "/sessions": {
            "get": {"summary": "The caller's running GPU sessions",
                    "parameters": [{"name": "ended", "in": "query", "required": False,
                                    "schema": {"type": "string", "enum": ["0", "1"]},
                                    "description": "1: also those ended in the last 5 minutes, with ended_by and why"}],
                    "responses": {"200": ok(_ref("Sessions")), **_errors(400)}},
            "post": {"summary": "Start a GPU session", "requestBody": _body("SessionCreate"),
                     "responses": {"201": ok(_ref("Session"), "Created"), **_errors(400, 402, 409, 413)}},
        },
        "/sessions/{id}": {
            "parameters": _ID,
            "get": {"summary": "One session", "responses": {"200": ok(_ref("Session")), **_errors(404)}},
            "delete": {"summary": "Stop a session (its GPUs are free when this returns)",
                       "responses": {"200": ok(_ref("Session")), **_errors(404)}},
        },
        "/sessions/{id}/execute": {
            "parameters": _ID,
            "post": {"summary": "Run code in a session this API started", "requestBody": _body("ExecuteRequest"),
                     "responses": {"200": ok(_ref("Execution")), **_errors(400, 404, 409, 413)}},
        },
        "/sandboxes": {
            "get": {"summary": "The caller's sandboxes", "responses": {"200": ok(_ref("Sandboxes")), **_errors()}},
            "post": {"summary": "Create a sandbox", "requestBody": _body("SandboxCreate", required=False),
                     "parameters": [{"name": "from", "in": "query", "required": False, "schema": {"type": "string"},
                                     "description": "a snapshot id of yours: the sandbox starts in its state"}],
                     "responses": {"201": ok(_ref("Sandbox"), "Created"), **_errors(400, 402, 404, 409, 413)}},
        },
        "/sandboxes/{id}": {
            "parameters": _ID,
            "get": {"summary": "One sandbox", "responses": {"200": ok(_ref("Sandbox")), **_errors(404)}},
            "delete": {"summary": "Close a sandbox", "responses": {"200": ok(_ref("Sandbox")), **_errors(404)}},
        },
        "/sandboxes/{id}/execute": {
            "parameters": _ID + [{"name": "stream", "in": "query", "required": False,
                                  "schema": {"type": "string", "enum": ["0", "1"]},
                                  "description": "1: answer application/x-ndjson events as output arrives"}],
            "post": {
                "summary": "Run a cell in the sandbox", "requestBody": _body("ExecuteRequest"),
                "responses": {"200": {"description": "The execution (a limit hit is an error inside it)",
                                      "content": {"application/json": {"schema": _ref("Execution")},
                                                  "application/x-ndjson": {"schema": {"type": "string"}}}},
                              **_errors(400, 404, 413)},
            },
        },
        "/sandboxes/{id}/exec": {
            "parameters": _ID,
            "post": {"summary": "Run a command in the sandbox's jail (exit code, stdout, stderr)",
                     "requestBody": _body("ExecRequest"),
                     "responses": {"200": {"description": "The command's result; with stream=true (or Accept: "
                                                          "application/x-ndjson) one ExecEvent per line as output "
                                                          "arrives, the last one done with the result",
                                           "content": {"application/json": {"schema": _ref("ExecResult")},
                                                       "application/x-ndjson": _NDJSON_OF("ExecEvent")}},
                                   **_errors(400, 404, 413)}},
        },
        "/sandboxes/{id}/files/watch": {
            "parameters": _ID + [
                {"name": "path", "in": "query", "required": True, "schema": {"type": "string"},
                 "description": "a directory relative to the work dir (\".\": all of it)"},
                {"name": "timeout", "in": "query", "required": False,
                 "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": maxima.wait},
                 "description": f"seconds the watch lasts (default and most: {maxima.wait:g}, the service's max_wait)"}],
            "get": {"summary": "File events of the work dir (inotify inside the jail), streamed",
                    "responses": {"200": {"description": "one FileEvent per line: ready, then create/modify/delete "
                                                         "as they happen, then end (with its reason)",
                                          "content": {"application/x-ndjson": _NDJSON_OF("FileEvent")}},
                                  **_errors(400, 404)}},
        },
        "/templates": {
            "get": {"summary": "The caller's templates", "responses": {"200": ok(_ref("Templates")), **_errors()}},
            "post": {"summary": "Build a template (files, packages, a set-up cell run once) as the caller's; "
                                "instant when built before",
                     "requestBody": _body("TemplateCreate", required=False),
                     "responses": {"201": ok(_ref("Template"), "Created"), **_errors(400, 402, 409, 413)}},
        },
        "/templates/{id}": {
            "parameters": _ID,
            "delete": {"summary": "Delete a template (its build and its warm sandboxes)",
                       "responses": {"200": ok(_ref("Template")), **_errors(404)}},
        },
        "/sandboxes/{id}/snapshot": {
            "parameters": _ID,
            "post": {"summary": "Snapshot the sandbox (mode namespace: its picklable variables, work dir and limits)",
                     "requestBody": _body("SnapshotRequest", required=False),
                     "responses": {"201": ok(_ref("Snapshot"), "Created"), **_errors(400, 404, 409, 413)}},
        },
        "/snapshots": {
            "get": {"summary": "The caller's snapshots", "responses": {"200": ok(_ref("Snapshots")), **_errors()}},
        },
        "/snapshots/{id}": {
            "parameters": _ID,
            "delete": {"summary": "Delete a snapshot", "responses": {"200": ok(_ref("Snapshot")), **_errors(404)}},
        },
        "/sandboxes/{id}/metrics": {
            "parameters": _ID,
            "get": {"summary": "CPU, memory, pids and output as a time series from the sandbox's cgroup",
                    "responses": {"200": ok(_ref("Metrics")), **_errors(404)}},
        },
        "/sandboxes/{id}/interrupt": {
            "parameters": _ID,
            "post": {"summary": "Interrupt the running cell (its execute answers with KeyboardInterrupt)",
                     "responses": {"200": ok(_ref("Sandbox")), **_errors(404)}},
        },
        "/sandboxes/{id}/files/{path}": {
            "parameters": _FILE,
            "get": {"summary": "A file's bytes, or a directory's entries",
                    "responses": {"200": {"description": "bytes, or a listing",
                                          "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                              "format": "binary"}},
                                                      "application/json": {"schema": _ref("Directory")}}},
                                  **_errors(400, 404, 413)}},
            "put": {"summary": "Write a file (raw body)",
                    "requestBody": {"required": False, "content": {"application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"200": ok(_ref("FileWritten")), **_errors(400, 404, 413)}},
            "delete": {"summary": "Remove a file (or an empty directory)",
                       "responses": {"200": ok(_ref("FileRemoved")), **_errors(400, 404)}},
        },
        "/maps": {"get": {"summary": "The caller's maps", "responses": {"200": ok(_ref("Maps")), **_errors()}}},
        "/maps/{id}": {"parameters": _ID,
                       "delete": {"summary": "Cancel a running map", "responses": {"200": ok(_ref("Map")), **_errors(404)}}},
        "/usage": {"get": {
            "summary": "The caller's ledger rows and totals",
            "parameters": [{"name": n, "in": "query", "required": False, "schema": s} for n, s in
                           (("notebook", _STR), ("kind", _STR), ("since", _TIME), ("until", _TIME))],
            "responses": {"200": ok(_ref("Usage")), **_errors(400)}}},
        "/budgets": {"get": {"summary": "The caller's budgets", "responses": {"200": ok(_ref("Budgets")), **_errors()}}},
        "/budgets/{scope}/{name}": {
            "parameters": _BUDGET,
            "put": {"summary": "Set a budget", "requestBody": _body("BudgetSet"),
                    "responses": {"200": ok(_ref("Budget")), **_errors(400, 404, 413)}},
            "delete": {"summary": "Remove a budget", "responses": {"200": ok(_ref("Budget")), **_errors(404)}},
        },
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok({"type": "object"})}}},
    }


MAX_TIME = 9e9  # seconds since the epoch (year 2255): in nanoseconds it still fits the ledger's 64-bit integers
_TIME = {"type": "number", "minimum": 0, "maximum": MAX_TIME, "description": "seconds since the epoch"}


def document(base_url: str = "/", version: str = "", maxima: Maxima = Maxima()) -> dict[str, Any]:
    """The OpenAPI document, its server URL under ``base_url``, its bounds this service's ``maxima``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "burstlab", "version": version,
                 "description": "GPU sessions, sandboxes, maps and the bill of one burstlab workspace. "
                                "See docs/api.md."},
        "servers": [{"url": base_url.rstrip("/") + "/burstlab/api"}],
        "security": [{"token": []}],
        "paths": _paths(maxima),
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                          "description": "`Authorization: token TOKEN` or `Bearer TOKEN`"}},
            "schemas": copy.deepcopy({**request_schemas(maxima), **RESPONSES}),
        },
    }


__all__ = ["RESPONSES", "document", "request_schemas", "validate"]
