"""The OpenAPI document: /predict's request body is the loaded model's contract, built once."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from src.contract import InputContract


def predict_request_body(
    contract: InputContract | None, example: list[dict[str, Any]], max_rows: int
) -> dict[str, Any]:
    if contract is None:  # before the model loads, the categories are not known yet
        schema: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
    else:
        schema = contract.adapter(max_rows).json_schema(ref_template="#/components/schemas/{model}")
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def install_openapi(app: FastAPI, max_rows: int) -> None:
    """Replace app.openapi with a builder that documents the loaded model's rows; the lifespan
    resets app.openapi_schema once the model is in."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            predictor = app.state.model.predictor
            contract = predictor.contract if predictor else None
            example = predictor.bundle.sample["rows"][:2] if predictor else []
            body = predict_request_body(contract, example, max_rows)
            schema["paths"]["/predict"]["post"]["requestBody"] = body
            defs = body["content"]["application/json"]["schema"].pop("$defs", {})
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
