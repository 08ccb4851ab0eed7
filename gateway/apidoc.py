"""The gateway's OpenAPI document as FastAPI builds it, adjusted: error responses are
``application/problem+json`` (``ProblemDetails``), not FastAPI's default validation body,
and the two ways of sending an API key are declared as security schemes. Nothing in it
depends on settings, so ``gateway/openapi.json`` (written by ``python -m gateway.openapi``)
is the same on every machine.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

API_VERSION = "1.0.0"
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer fa_<key id>_<secret>",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:  # we answer problem+json instead
        schemas.pop(name, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    return doc


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
