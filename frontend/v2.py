"""Open Inference Protocol (KServe V2) REST endpoint beside /predict, so Triton, KServe and
MLServer clients (tritonclient included) can query the coded service unchanged.

Routes: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{v}],
/v2/models/{name}[/versions/{v}]/ready; POST /v2/models/{name}[/versions/{v}]/infer.
Inputs as V2 JSON tensors (flat or nested data) or with Triton's binary data extension
(``Inference-Header-Content-Length``); outputs in JSON, or binary when asked. A reconstructed
answer is reported in the response's parameters: {"degraded": true, "degraded_count": n,
"degraded_indices": "0,3"} (V2 parameter values are scalars, hence the string of indices).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from aiohttp import web

from frontend.errors import BadRequest, NotReady, ServingError
from frontend.handlers import SERVICE, parse_deadline, validate_queries
from frontend.query import Answer

HEADER_LENGTH = "Inference-Header-Content-Length"
V2_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
             "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32}
OUTPUT_NAME = "output-0"
INPUT_NAME = "input-0"


class ModelNotFound(ServingError):
    code, status = "model_not_found", 404


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v2", server_metadata)
    r.add_get("/v2/health/live", live)
    r.add_get("/v2/health/ready", ready)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r.add_get(base, model_metadata)
        r.add_get(base + "/ready", model_ready)
        r.add_post(base + "/infer", infer)


async def server_metadata(request: web.Request) -> web.Response:
    return web.json_response({"name": "parm-serve", "version": "0.1.0", "extensions": ["binary_tensor_data"]})


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    is_ready = request.app[SERVICE].ready()
    return web.json_response({"ready": is_ready}, status=200 if is_ready else 503)


async def model_ready(request: web.Request) -> web.Response:
    _check_model(request)
    return await ready(request)


async def model_metadata(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    shape = _model_shape(request)
    classes = service.pool.output_size()
    return web.json_response({
        "name": service.cfg.model_name, "versions": ["1"], "platform": f"parm-{service.cfg.mode}",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *shape]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, classes if classes else -1]}]})


async def infer(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    shape = _model_shape(request)
    header, binary = await _read(request)
    arr = _input_array(header, binary)
    inputs = validate_queries(arr, shape, service.cfg.max_queries_per_request)
    params = header.get("parameters") or {}
    deadline = parse_deadline(params.get("deadline_ms") if isinstance(params, dict) else None,
                              service.cfg.max_deadline_ms)
    answers = await service.submit(inputs, deadline)
    return _respond(request, header, answers)


def _model_shape(request: web.Request) -> tuple[int, ...]:
    """The per-query input shape of the model the request names; 404 or 503 otherwise."""
    _check_model(request)
    shape = request.app[SERVICE].input_shape()
    if shape is None:
        raise NotReady("no healthy data worker yet: the model's input shape is unknown")
    return shape


def _check_model(request: web.Request) -> None:
    name = request.match_info["name"]
    expected = request.app[SERVICE].cfg.model_name
    if name != expected:
        raise ModelNotFound(f"unknown model {name!r}; this server serves {expected!r}")


async def _read(request: web.Request) -> tuple[dict[str, Any], bytes]:
    """-> (JSON header, the binary tail of Triton's binary data extension, possibly empty)."""
    raw = await request.read()
    length = request.headers.get(HEADER_LENGTH)
    try:
        cut = int(length) if length is not None else len(raw)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {length!r}") from None
    if not 0 <= cut <= len(raw):
        raise BadRequest(f"{HEADER_LENGTH} {cut} is outside the body of {len(raw)} bytes")
    try:
        header = json.loads(raw[:cut])
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON inference request: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or len(header["inputs"]) != 1:
        raise BadRequest('an inference request needs "inputs": [one tensor] (this model has one input)')
    return header, raw[cut:]


def _input_array(header: dict[str, Any], binary: bytes) -> np.ndarray:
    """The single V2 input tensor -> numpy array of its declared shape."""
    tensor = header["inputs"][0]
    if not isinstance(tensor, dict):
        raise BadRequest("an input tensor must be an object with name, shape, datatype and data")
    dtype = V2_DTYPES.get(tensor.get("datatype"))
    shape = tensor.get("shape")
    if dtype is None:
        raise BadRequest(f"datatype {tensor.get('datatype')!r} not supported; use one of {', '.join(V2_DTYPES)}")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"input shape {shape!r} must be a non-empty list of non-negative integers")
    size = int(np.prod(shape))
    params = tensor.get("parameters") or {}
    if isinstance(params, dict) and "binary_data_size" in params:
        nbytes = params["binary_data_size"]
        if nbytes != len(binary) or nbytes != size * np.dtype(dtype).itemsize:
            raise BadRequest(f"binary_data_size {nbytes} does not match shape {shape} of {tensor['datatype']} "
                             f"({size * np.dtype(dtype).itemsize} bytes) or the {len(binary)} bytes sent")
        flat = np.frombuffer(binary, dtype=np.dtype(dtype).newbyteorder("<"))
    else:
        try:
            flat = np.asarray(tensor.get("data"), dtype=dtype).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"input data is not a list of {tensor['datatype']} numbers: {exc}") from exc
        if flat.size != size:
            raise BadRequest(f"input data has {flat.size} elements, shape {shape} needs {size}")
    return flat.reshape(shape).astype(np.float32)


def _respond(request: web.Request, header: dict[str, Any], answers: list[Answer]) -> web.Response:
    outputs = np.stack([a.output for a in answers]).astype(np.float32)  # (N, C)
    degraded = [i for i, a in enumerate(answers) if a.degraded]
    params: dict[str, Any] = {"degraded": bool(degraded), "degraded_count": len(degraded),
                              "degraded_indices": ",".join(map(str, degraded))}
    defaults = [i for i, a in enumerate(answers) if a.default]
    if defaults:
        params |= {"default": True, "default_indices": ",".join(map(str, defaults))}
    out: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(outputs.shape)}
    body: dict[str, Any] = {"model_name": request.app[SERVICE].cfg.model_name, "model_version": "1",
                            "parameters": params, "outputs": [out]}
    if "id" in header:
        body["id"] = header["id"]
    if not _wants_binary(header):
        out["data"] = outputs.reshape(-1).tolist()
        return web.json_response(body)
    data = outputs.astype("<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(data)}
    head = json.dumps(body).encode()
    return web.Response(body=head + data, content_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(len(head))})


def _wants_binary(header: dict[str, Any]) -> bool:
    params = header.get("parameters") or {}
    if isinstance(params, dict) and params.get("binary_data_output"):
        return True
    outs = header.get("outputs") or []
    return any(isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") for o in outs)
