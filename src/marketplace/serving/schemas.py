"""Request bodies: decoded and checked before anything reaches the learner, each mistake one line.

Inputs come as JSON ({"inputs": nested lists}, the model's float input) or
as raw bytes (`Content-Type: application/octet-stream`, `X-Shape: B,1,28,28`,
`X-Dtype: uint8 | float32`). uint8 inputs are pixels 0..255, normalised the
way the data set was in training; float inputs are taken as they are.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError

from .engine import RequestError

_DTYPES = {"uint8": np.uint8, "float32": np.float32}
MAX_DEPTH = 8  # nesting of a JSON body: {"inputs": [B][C][H][W]} needs 5
MAX_DIMS = 8  # dimensions of a raw input's X-Shape
FLOAT32_MAX = float(np.finfo(np.float32).max)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')  # JSON strings, escapes included: brackets inside them do not nest
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

# Integers are bounded where they are read, before SQLite (64-bit) or torch (int64 indices) see them.
Id = Annotated[StrictInt, Field(ge=0, lt=2**63)]
Count = Annotated[StrictInt, Field(ge=0, lt=2**31)]  # a label, a vendor index
# A loss is a JSON number (not a string) that stays finite in float32, the precision it is learned in.
Loss = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=-FLOAT32_MAX, lt=FLOAT32_MAX)]


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Id
    label: Count


class ReportItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: Id
    path: Annotated[list[Count], Field(max_length=1024)]
    loss: Loss


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` before parsing it (a deep body would exhaust the parser's stack).

    Vectorised: strings are cut out, then the depth is a running sum over the brackets left, so checking
    a predict body costs a few milliseconds, not a Python loop over every byte.
    """
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return
    codes = np.frombuffer(brackets, dtype=np.uint8)
    depth = np.cumsum(np.where((codes == 0x5B) | (codes == 0x7B), 1, -1))
    if int(depth.max()) > limit:
        raise RequestError(f"the JSON body is nested deeper than {limit} levels")


FEEDBACK = TypeAdapter(list[FeedbackItem])
REPORT = TypeAdapter(list[ReportItem])


def one_line(error: ValidationError) -> str:
    """pydantic's first complaint, with where it is, on one line."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def parse_list(adapter: TypeAdapter, body: bytes, what: str, limit: int) -> list:
    """A JSON list of records, at least one and at most `limit`."""
    check_depth(body)
    try:
        items = adapter.validate_json(body)
    except ValidationError as e:
        raise RequestError(f"{what} must be a JSON list of records: {one_line(e)}") from None
    if not items:
        raise RequestError(f"{what} is empty")
    if len(items) > limit:
        raise RequestError(f"{what} has {len(items)} records; at most {limit} per request", 413)
    return items


def _shape(text: str | None) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in (text or "").split(","))
    except ValueError:
        raise RequestError(f"X-Shape must be comma-separated integers like 8,1,28,28, got {text!r}") from None
    if not shape or any(v < 0 for v in shape):
        raise RequestError(f"X-Shape must be non-negative integers, got {text!r}")
    if len(shape) > MAX_DIMS:
        raise RequestError(f"X-Shape has {len(shape)} dimensions; at most {MAX_DIMS}")
    return shape


def decode_raw(body: bytes, shape_header: str | None, dtype_header: str | None) -> torch.Tensor:
    """Raw bytes + shape + dtype -> a float32 tensor, or uint8 pixels (see `normalize_pixels`)."""
    if shape_header is None:
        raise RequestError("raw inputs need an X-Shape header (e.g. X-Shape: 8,1,28,28)")
    dtype = (dtype_header or "float32").lower()
    if dtype not in _DTYPES:
        raise RequestError(f"X-Dtype must be one of {', '.join(_DTYPES)}, got {dtype_header!r}")
    shape = _shape(shape_header)
    expected = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
    if len(body) != expected:
        raise RequestError(f"X-Shape {list(shape)} of {dtype} needs {expected} bytes, the body has {len(body)}")
    return torch.from_numpy(np.frombuffer(body, dtype=_DTYPES[dtype]).reshape(shape).copy())


def normalize_pixels(x: torch.Tensor, pixels: tuple | None) -> torch.Tensor:
    """uint8 pixels [B, C, ...] -> float32 as training saw them: (x / 255 - mean) / std.

    pixels: (mean, std), numbers or one per channel; None takes the values as they are.
    """
    x = x.float()
    if pixels is None:
        return x
    mean, std = pixels
    if isinstance(mean, (int, float)):
        return (x / 255.0 - mean) / std
    shape = (1, len(mean)) + (1,) * (x.dim() - 2)  # per channel
    return (x / 255.0 - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def decode_json(body: bytes) -> torch.Tensor:
    """{"inputs": nested lists of numbers} -> float32 tensor."""
    check_depth(body)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not JSON ({e}); send {{\"inputs\": [...]}} or raw bytes") from None
    if not isinstance(doc, dict) or "inputs" not in doc or set(doc) - {"inputs"}:
        raise RequestError('the body must be a JSON object {"inputs": nested lists of numbers}')
    try:
        return torch.tensor(doc["inputs"], dtype=torch.float32)
    except (ValueError, TypeError, RuntimeError, OverflowError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RequestError(f"inputs must be a rectangular nested list of numbers: {first}") from None


def check_inputs(x: torch.Tensor, input_shape: tuple[int, ...], limit: int) -> torch.Tensor:
    """[B, *input_shape] (or any shape with the same numbers per example, e.g. [B, 784]) with finite values."""
    per_example = math.prod(input_shape)
    if x.dim() < 1 or x.shape[0] == 0:
        raise RequestError(f"inputs must be a non-empty batch [B, {', '.join(map(str, input_shape))}]")
    if x.shape[0] > limit:
        raise RequestError(f"a batch of {x.shape[0]} inputs is over the limit of {limit} per request", 413)
    if math.prod(x.shape[1:]) != per_example:
        raise RequestError(f"each input must have shape {list(input_shape)} ({per_example} numbers); "
                           f"got a batch of shape {list(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise RequestError("inputs must be finite numbers (no NaN or infinity)")
    return x.reshape(x.shape[0], *input_shape)
