"""Check a safetensors file's header before any library maps or reads it.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON describing every
tensor (dtype, shape, [begin, end) byte offsets into the data region), then the data region. A
truncated download or a hostile file can lie about any of these; the safetensors library then
raises its own errors (or, for some versions, worse). We read only the header (never the
weights) and check it is consistent with the file on disk, as strictly as the format requires.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from ..errors import ExplorerError

MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
# Bits per element of every dtype the safetensors format defines (sub-byte floats included).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(path: Path) -> dict:
    """The validated header of a safetensors file (tensor name -> entry, plus __metadata__).

    Raises ExplorerError("<path> is truncated or corrupt: <reason>") for anything inconsistent.
    """
    path = Path(path)

    def corrupt(reason: str) -> ExplorerError:
        return ExplorerError(f"{path} is truncated or corrupt: {reason}. Download or convert it again.")

    if not path.is_file():  # a folder, a device or a FIFO (opening one would block forever)
        raise ExplorerError(f"{path} is not a regular file, so it cannot hold safetensors weights.")
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise corrupt(f"it is {size} bytes, too short for the 8-byte header length")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise corrupt(f"its header claims {header_len:,} bytes but the file has only {size - 8:,} after "
                              "the length")
            if header_len > MAX_HEADER_BYTES:
                raise corrupt(f"its header claims {header_len:,} bytes (the format's limit is "
                              f"{MAX_HEADER_BYTES:,})")
            raw = handle.read(header_len)
    except OSError as error:
        raise ExplorerError(f"{path} could not be read: {error.strerror or error}.") from None
    if len(raw) < header_len:  # the file shrank while we read it
        raise corrupt("the header is cut short")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise corrupt("the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise corrupt("the header is not a JSON object")

    data_size = size - 8 - header_len
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise corrupt("__metadata__ must map names to strings")
            continue
        shown = name[:80]
        if not isinstance(entry, dict):
            raise corrupt(f"tensor {shown!r} is not described by an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BITS:
            raise corrupt(f"tensor {shown!r} has unknown dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise corrupt(f"tensor {shown!r} has an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
                or offsets[0] > offsets[1]):
            raise corrupt(f"tensor {shown!r} has invalid data_offsets")
        begin, end = offsets
        if end > data_size:
            raise corrupt(f"tensor {shown!r} ends at byte {end:,} of the data, which has only {data_size:,} bytes")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise corrupt(f"tensor {shown!r} ({dtype}, shape {shape}) needs {bits / 8:,g} bytes but its "
                          f"data_offsets span {end - begin:,}")
        spans.append((begin, end, shown))
    # The tensors must tile the data region exactly: no overlaps, no holes, nothing left over.
    position = 0
    for begin, end, shown in sorted(spans):
        if begin != position:
            raise corrupt(f"tensor {shown!r} starts at byte {begin:,} of the data, expected {position:,} "
                          "(tensors overlap or leave a gap)")
        position = end
    if position != data_size:
        raise corrupt(f"its tensors cover {position:,} bytes but the data region holds {data_size:,}")
    return header


def check_safetensors(path: Path) -> None:
    """Raise ExplorerError unless ``path`` is a well-formed safetensors file (reads the header only)."""
    read_header(path)
