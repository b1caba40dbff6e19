"""Wire formats shared by the policy server (harness/serve) and the remote agent: msgpack only, never pickle.

vla-eval's (its RFC-0002), which the project's own protocol ("native") also uses:
    every WebSocket message is one msgpack map {"type", "payload", "seq", "timestamp"}; `type` is one of
    hello, episode_start, observation, action, episode_end, error; `payload` a map; a reply carries the
    `seq` of the message it answers. numpy arrays travel as {"__ndarray__": true, "data": bytes,
    "dtype": str, "shape": [int]}, and only bool / int / uint / float dtypes are accepted. vla-eval's own
    client sends HWC uint8 images as {"__image__": true, "format": "raw" | "png" | "jpeg", "data",
    "shape"[, "dtype"]}, which is read too.
openpi's:
    every message is one msgpack value; arrays as {b"__ndarray__": true, b"data", b"dtype", b"shape"} and
    numpy scalars as {b"__npgeneric__": true, b"data", b"dtype"} (byte keys); the server sends its
    metadata first; an error reply is a text message.

Everything that cannot be read raises `WireError` naming what is wrong, so that a server can answer it and
go on.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

MESSAGE_TYPES = ("hello", "episode_start", "observation", "action", "episode_end", "error")
ALLOWED_DTYPE_KINDS = "biuf"  # bool, signed int, unsigned int, float
MAX_IMAGE_PIXELS = 4096 * 4096  # a compressed image is refused before it is decoded past this
MAX_DECODED_BYTES = 256 * 2**20  # and a message's images together: a few KB of PNG can decode to 64 MiB


class WireError(ValueError):
    """A message that cannot be read: not msgpack, a missing field, a dtype that is not allowed, ..."""


@dataclass
class Message:
    type: str
    payload: dict[str, Any]
    seq: int = 0
    timestamp: float = field(default_factory=time.time)


# ------------------------------------------------------------------ arrays
def _encode_array(obj: Any) -> Any:
    """msgpack `default` hook of vla-eval's format."""
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return {"__ndarray__": True, "data": np.ascontiguousarray(obj).tobytes(), "dtype": obj.dtype.str,
                "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__} (msgpack types and numpy arrays only)")


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in ALLOWED_DTYPE_KINDS:
        raise WireError(f"array dtype {dtype.str!r} is not allowed (bool, int, uint and float only)")


def _dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype.decode() if isinstance(dtype, bytes) else dtype)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise WireError(f"array dtype {dtype!r} is not a numpy dtype") from None
    _check_dtype(dt)
    return dt


def _array(data: Any, dtype: Any, shape: Any) -> np.ndarray:
    """An array from its wire fields, checked: allowed dtype, a shape of ints, as many bytes as it needs."""
    dt = _dtype(dtype)
    if not isinstance(data, bytes):
        raise WireError(f"array data must be bytes, got {type(data).__name__}")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise WireError(f"array shape must be a list of non-negative ints, got {shape!r}")
    expected = math.prod(shape) * dt.itemsize  # exact ints (np.prod's reduction cost ~10 % of a server's event loop)
    if expected != len(data):
        raise WireError(f"array of shape {list(shape)} and dtype {dt.str} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dt).reshape(shape).astype(dt.newbyteorder("="), copy=True)


def _image(obj: dict[str, Any], decoder: "_Decoder") -> np.ndarray:
    """vla-eval's encoded image (raw, png or jpeg), checked against its declared shape; only the declared format's
    decoder of PIL's many is used."""
    fmt, shape = obj.get("format"), obj.get("shape")
    if fmt == "raw":
        return _array(obj.get("data"), obj.get("dtype", "|u1"), shape)
    if fmt not in ("png", "jpeg"):
        raise WireError(f"image format {fmt!r} is not one of raw, png, jpeg")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(obj.get("data") or b""), formats=["PNG" if fmt == "png" else "JPEG"]) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise WireError(f"a {img.width}x{img.height} image is larger than {MAX_IMAGE_PIXELS} pixels")
            decoder.charge(img.width * img.height * len(img.getbands()))
            arr = np.array(img)
    except WireError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever PIL raises on broken data
        raise WireError(f"{fmt} image cannot be decoded: {e}") from None
    if shape is not None and list(arr.shape) != list(shape):
        if not (arr.ndim == 2 and list(shape) == [*arr.shape, 1]):  # a one-channel image decodes to (H, W)
            raise WireError(f"{fmt} image decodes to shape {list(arr.shape)}, declared {list(shape)}")
        arr = arr[..., None]
    return arr


class _Decoder:
    """msgpack's `object_hook` for one message, both formats (str keys: vla-eval's, byte keys: openpi's); counts
    what the message's images decode to (arrays are no larger than the message, whose size the server caps)."""

    def __init__(self) -> None:
        self.left = MAX_DECODED_BYTES

    def charge(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise WireError(f"the message's images decode to more than {MAX_DECODED_BYTES // 2**20} MiB")

    def __call__(self, obj: dict[Any, Any]) -> Any:
        return _decode(obj, self)


def _decode(obj: dict[Any, Any], decoder: _Decoder) -> Any:
    if obj.get("__ndarray__") is True:
        return _array(obj.get("data"), obj.get("dtype"), obj.get("shape"))
    if obj.get("__image__") is True:
        return _image(obj, decoder)
    if obj.get(b"__ndarray__") is True:
        return _array(obj.get(b"data"), obj.get(b"dtype"), obj.get(b"shape"))
    if obj.get(b"__npgeneric__") is True:
        dt = _dtype(obj.get(b"dtype"))
        try:
            return dt.type(obj.get(b"data"))
        except (TypeError, ValueError, OverflowError) as e:
            raise WireError(f"numpy scalar of dtype {dt.str} cannot hold {obj.get(b'data')!r}: {e}") from None
    return obj


def _no_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not accepted")


def _unpack(data: Any) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary msgpack message, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, object_hook=_Decoder(), ext_hook=_no_ext, strict_map_key=False)
    except WireError:
        raise
    except Exception as e:  # noqa: BLE001 - msgpack raises several types on broken data
        raise WireError(f"not a msgpack message ({len(data)} bytes): {type(e).__name__}: {e}") from None


# ------------------------------------------------------------------ vla-eval's messages (and native)
def pack_message(type: str, payload: dict[str, Any], seq: int = 0) -> bytes:
    if type not in MESSAGE_TYPES:
        raise ValueError(f"unknown message type {type!r}; expected one of {MESSAGE_TYPES}")
    raw = {"type": type, "payload": payload, "seq": int(seq), "timestamp": time.time()}
    return msgpack.packb(raw, default=_encode_array, use_bin_type=True)


def unpack_message(data: Any) -> Message:
    raw = _unpack(data)
    if not isinstance(raw, dict):
        raise WireError(f"a message must be a msgpack map, got {type(raw).__name__}")
    missing = [k for k in ("type", "payload", "seq", "timestamp") if k not in raw]
    if missing:
        raise WireError(f"message lacks {missing} (it needs type, payload, seq, timestamp)")
    if raw["type"] not in MESSAGE_TYPES:
        raise WireError(f"unknown message type {raw['type']!r}; expected one of {', '.join(MESSAGE_TYPES)}")
    if not isinstance(raw["payload"], dict):
        raise WireError(f"message payload must be a map, got {type(raw['payload']).__name__}")
    if not isinstance(raw["seq"], int) or isinstance(raw["seq"], bool):
        raise WireError(f"message seq must be an integer, got {raw['seq']!r}")
    if not isinstance(raw["timestamp"], (int, float)):
        raise WireError(f"message timestamp must be a number, got {raw['timestamp']!r}")
    return Message(raw["type"], raw["payload"], raw["seq"], float(raw["timestamp"]))


# ------------------------------------------------------------------ openpi's frames
def _encode_openpi(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__} (msgpack types and numpy arrays only)")


def pack_openpi(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_encode_openpi, use_bin_type=True)


def unpack_openpi(data: Any) -> Any:
    return _unpack(data)
