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
import math
from typing import Any, NamedTuple

import numpy as np
from aiohttp import web

from frontend.bodies import brief, describe, loads_json, parse_off_loop, shape_size
from frontend.errors import BadRequest, ModelNotFound, NotReady, PayloadTooLarge
from frontend.handlers import SERVICE, parse_deadline, readiness, validate_queries
from frontend.query import Answer

HEADER_LENGTH = "Inference-Header-Content-Length"
V2_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
             "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32}
OUTPUT_NAME = "output-0"
INPUT_NAME = "input-0"


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
    is_ready = bool((await readiness(request))["ready"])
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


class InferRequest(NamedTuple):
    inputs: np.ndarray              # (N, *shape) float32, validated
    deadline_ms: float | None
    id: str | None                  # echoed in the answer
    binary_output: bool


async def infer(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    shape = _model_shape(request)
    raw, length, cfg = await request.read(), request.headers.get(HEADER_LENGTH), service.cfg
    req = await parse_off_loop(len(raw), lambda: _parse_infer(
        raw, length, shape, cfg.max_queries_per_request, cfg.max_deadline_ms))
    answers = await service.submit(req.inputs, req.deadline_ms)
    return _respond(request, req, answers)


def _parse_infer(raw: bytes, length: str | None, shape: tuple[int, ...], max_queries: int,
                 max_deadline_ms: float) -> InferRequest:
    """A whole inference request -> what serving it needs; every check made before any work is
    done. Pure, so a big body can be parsed in a thread (its parsed lists are freed there too)."""
    header, binary = _split(raw, length)
    arr = _input_array(header, binary, max_elements=max_queries * math.prod(shape))
    inputs = validate_queries(arr, shape, max_queries)
    deadline = parse_deadline(_parameters(header, "request").get("deadline_ms"), max_deadline_ms)
    return InferRequest(inputs, deadline, header.get("id"), _wants_binary(header))


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


def _split(raw: bytes, length: str | None) -> tuple[dict[str, Any], memoryview]:
    """-> (JSON header, the binary tail of Triton's binary data extension, possibly empty)."""
    cut = _header_length(length, len(raw))
    view = memoryview(raw)  # slices without copying a body of up to 16 MB
    header = loads_json(view[:cut], "JSON inference request")
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or len(header["inputs"]) != 1:
        raise BadRequest('an inference request needs "inputs": [one tensor] (this model has one input)')
    if "id" in header and not isinstance(header["id"], str):  # echoed in the answer: a string, as V2 says
        raise BadRequest(f"the request id must be a string, got {describe(header['id'])}")
    return header, view[cut:]


def _header_length(value: str | None, body_bytes: int) -> int:
    """Inference-Header-Content-Length -> where the JSON header ends (the whole body without it)."""
    if value is None:
        return body_bytes
    text = value.strip()
    # only plain digits: int() would also take "+5", "1_0" and thousands of digits
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise BadRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {describe(value)}")
    if int(text) > body_bytes:
        raise BadRequest(f"{HEADER_LENGTH} {int(text)} is past the end of the body of {body_bytes} bytes")
    return int(text)


def _parameters(obj: dict[str, Any], what: str) -> dict[str, Any]:
    """A V2 "parameters" field: absent or an object."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{what} parameters must be an object, got {describe(params)}")
    return params


def _input_array(header: dict[str, Any], binary: memoryview, max_elements: int) -> np.ndarray:
    """The single V2 input tensor -> numpy array of its declared shape. Shape, datatype, data and
    binary_data_size must all agree: 400 naming the two that do not, 413 for a shape over the limit."""
    tensor = header["inputs"][0]
    if not isinstance(tensor, dict):
        raise BadRequest("an input tensor must be an object with name, shape, datatype and data")
    datatype = tensor.get("datatype")
    dtype = V2_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequest(f"datatype {describe(datatype)} not supported; use one of {', '.join(V2_DTYPES)}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape:
        raise BadRequest(f"input shape {describe(shape)} must be a non-empty list of non-negative integers")
    size = shape_size(shape, "input shape")
    if size == 0:  # refused here: numpy cannot even shape an empty array whose other dims are huge
        raise BadRequest(f"input shape {describe(shape)} has no elements: a request needs a non-empty list "
                         "of queries")
    if size > max_elements:
        raise PayloadTooLarge(f"input shape {describe(shape)} has {size} elements; a request takes at most "
                              f"{max_elements}")
    params = _parameters(tensor, "input")
    if "binary_data_size" in params:
        flat = _binary_data(params["binary_data_size"], binary, dtype, datatype, shape, size)
    elif binary:
        raise BadRequest(f"{len(binary)} bytes of binary data follow the header, but the input has no "
                         "binary_data_size parameter")
    else:
        flat = _json_data(tensor.get("data"), dtype, datatype, shape, size)
    return flat.reshape(shape).astype(np.float32)


def _binary_data(nbytes: Any, binary: memoryview, dtype: type, datatype: str, shape: list[int], size: int) -> np.ndarray:
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise BadRequest(f"binary_data_size must be a non-negative integer, got {describe(nbytes)}")
    needed = size * np.dtype(dtype).itemsize
    if nbytes != needed:
        raise BadRequest(f"binary_data_size {nbytes} does not match shape {describe(shape)} of {datatype} "
                         f"({needed} bytes)")
    if nbytes != len(binary):
        raise BadRequest(f"binary_data_size {nbytes} does not match the {len(binary)} bytes sent after the header")
    return np.frombuffer(binary, dtype=np.dtype(dtype).newbyteorder("<"))


def _json_data(data: Any, dtype: type, datatype: str, shape: list[int], size: int) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(f"input data must be a list of {datatype} numbers (or binary), got {type(data).__name__}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # FP16 overflow becomes inf, refused later
            flat = np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: 300 as INT8, 2**70 as INT64
        raise BadRequest(f"input data is not a list of {datatype} numbers: {brief(exc)}") from None
    if flat.size != size:
        raise BadRequest(f"input data has {flat.size} elements, shape {describe(shape)} needs {size}")
    return flat


def _respond(request: web.Request, req: InferRequest, answers: list[Answer]) -> web.Response:
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
    if req.id is not None:
        body["id"] = req.id
    if not req.binary_output:
        out["data"] = outputs.reshape(-1).tolist()
        return web.json_response(body)
    data = outputs.astype("<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(data)}
    head = json.dumps(body).encode()
    return web.Response(body=head + data, content_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(len(head))})


def _wants_binary(header: dict[str, Any]) -> bool:
    """Binary output when the request asks for it, for all outputs or for one."""
    if _parameters(header, "request").get("binary_data_output"):
        return True
    outs = header.get("outputs")
    if outs is None:
        return False
    if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
        raise BadRequest(f"outputs must be a list of objects, got {describe(outs)}")
    return any(_parameters(o, "output").get("binary_data") for o in outs)
