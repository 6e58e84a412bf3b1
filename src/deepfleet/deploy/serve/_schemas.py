"""Pydantic models of the request and answer bodies, for the OpenAPI schema only.

Bodies are parsed by _protocol (faster, and with error messages that name the problem);
these models document the same shapes at /openapi.json and /docs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RequestInput(BaseModel):
    name: str = Field(description="Input tensor name: 'input'.")
    shape: list[int] = Field(description="[batch, *input shape], e.g. [2, 1, 8, 8].")
    datatype: str = Field(
        description="Any numeric type, read as raw values (the metadata names the data's own); "
        "BYTES for a model trained on encoded images: one image file per element."
    )
    data: list[Any] | None = Field(
        None,
        description="Tensor data, row-major, flat or nested (BYTES: one base64 string per "
        "image file); absent when parameters.binary_data_size says its bytes follow the JSON "
        "(binary tensor data).",
    )
    parameters: dict[str, Any] | None = Field(None, description="Only binary_data_size.")


class RequestOutput(BaseModel):
    name: str = Field(description="logits, probabilities or label.")
    parameters: dict[str, Any] | None = Field(None, description="Only binary_data (a bool).")


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="Only binary_data_output.")
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="Default: every output.")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class PredictRequest(BaseModel):
    instances: list[Any] = Field(description="Samples, each nested in the input shape or flat.")


class GenerateRequest(BaseModel):
    prompt: str = Field(description="Text to continue; at most the context length in tokens.")
    max_new_tokens: int = Field(64, ge=1, description="Capped by the server's limit (256).")
    temperature: float = Field(1.0, ge=0, description="0: always the most likely token.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens (0: all).")
    seed: int = Field(0, ge=0, description="The same seed gives the same text.")


class Prediction(BaseModel):
    """A classification's answer; other tasks answer with their own named values
    (multilabel: prob_<label>, label_<label>, labels; regression: value or value_<name>;
    causal_lm: next_token, next_text)."""

    model_config = {"extra": "allow"}

    label: int | None = None
    label_name: str | None = None
    confidence: float | None = None
    probabilities: list[float] | None = None


class PredictResponse(BaseModel):
    model_name: str
    predictions: list[Prediction]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong with the request.")


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra for a route whose body is read by hand."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def component_schemas() -> dict[str, Any]:
    """Schemas of the request models (and what they reference) for components/schemas."""
    out: dict[str, Any] = {}
    for model in (InferRequest, PredictRequest, GenerateRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out
