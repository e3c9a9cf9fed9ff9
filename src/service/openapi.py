"""The OpenAPI document: /predict's request body is the loaded model's contract, built once."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from src.model.contract import InputContract
from src.service.models import ErrorResponse, PredictResponse
from src.service.routes.predict import SUMMARY

REF = "#/components/schemas"


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


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"{REF}/{model.__name__}"}}}


def predict_operation(body: dict[str, Any], inputs: int | None) -> dict[str, Any]:
    """/predict is a plain ASGI route (its speed), so its OpenAPI entry is written here."""
    reasons: dict[str, Any] = {"type": "integer", "minimum": 0, "default": 0}
    if inputs is not None:
        reasons["maximum"] = inputs
    errors = {
        "400": "Invalid rows (every error, with row and field), or reasons out of range",
        "413": "Too many rows or too large a body",
        "415": "Not JSON",
        "503": "Model not loaded",
    }
    return {
        "summary": SUMMARY,
        "operationId": "predict",
        "parameters": [
            {
                "name": "reasons",
                "in": "query",
                "required": False,
                "description": "Per-row reasons: each row's K largest exact contributions "
                "(LightGBM's TreeSHAP, in log-odds, in the spec's column names) and its base "
                "value. 0, the default, gives none (the fast path).",
                "schema": reasons,
            }
        ],
        "requestBody": body,
        "responses": {
            "200": {
                "description": "One prediction per row, in input order",
                "content": _ref(PredictResponse),
            },
            **{
                code: {"description": text, "content": _ref(ErrorResponse)}
                for code, text in errors.items()
            },
        },
    }


def _component_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF + "/{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def install_openapi(app: FastAPI, max_rows: int) -> None:
    """Replace app.openapi with a builder that documents the loaded model's rows; the lifespan
    resets app.openapi_schema once the model is in."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            predictor = app.state.model.predictor
            title, description = app.title, app.description
            if predictor is not None:  # the served model's dataset, in its spec's words
                spec = predictor.spec
                title = spec.title_or_name
                use = [f"Intended use: {spec.intended_use}"] if spec.intended_use else []
                description = " ".join(p for p in (spec.description, *use) if p)
            schema = get_openapi(
                title=title, version=app.version, description=description, routes=app.routes
            )
            contract = predictor.contract if predictor else None
            example = predictor.bundle.sample["rows"][:2] if predictor else []
            body = predict_request_body(contract, example, max_rows)
            defs = body["content"]["application/json"]["schema"].pop("$defs", {})
            inputs = len(predictor.spec.model_inputs) if predictor else None
            operation = predict_operation(body, inputs)
            schema["paths"] = {"/predict": {"post": operation}, **schema["paths"]}
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs)
            components.update(_component_schemas(PredictResponse, ErrorResponse))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
