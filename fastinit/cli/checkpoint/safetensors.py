"""The safetensors file format, as fastinit writes and re-reads it.

An 8-byte little-endian header length, the JSON header (``__metadata__``
plus each tensor's dtype code, shape and data offsets) padded with spaces
to a multiple of 8, then the tensors back to back in safetensors' own order.
The dtype codes are :data:`~.spec.DTYPES`'.
"""

import json
import os
import struct
from dataclasses import dataclass

from ... import __version__
from ..._contract import STREAM_VERSION
from .spec import DTYPES, SpecError

MAX_HEADER = 100_000_000            # safetensors refuses larger headers


class FormatError(ValueError):
    """A file that is not a readable safetensors file; the message says why."""


@dataclass
class Layout:
    """Where everything goes: header bytes, then each tensor at data_start + begin."""
    header: bytes
    entries: list                    # [(TensorSpec, begin, end)] in file order
    data_start: int
    total: int
    metadata: dict


def _file_order(tensors):
    """safetensors' own order: larger dtypes first, then by name, so every tensor
    starts on a multiple of its itemsize."""
    return sorted(tensors, key=lambda t: (-DTYPES[t.dtype][2], t.name.encode("utf-8")))


def file_metadata(spec, seed):
    """The ``__metadata__`` a checkpoint of ``spec`` written with ``seed`` carries."""
    md = {"format": "pt"}            # transformers refuses files without it
    md.update(spec.metadata)
    md["fastinit.seed"] = str(seed)
    md["fastinit.stream"] = STREAM_VERSION
    md["fastinit.version"] = __version__
    md["fastinit.spec"] = json.dumps([t.to_json() for t in spec.tensors],
                                     separators=(",", ":"), ensure_ascii=False)
    return md


def layout(spec, seed):
    """The :class:`Layout` of ``spec``'s checkpoint written with ``seed``."""
    md = file_metadata(spec, seed)
    header = {"__metadata__": md}
    entries, pos = [], 0
    for t in _file_order(spec.tensors):
        header[t.name] = {"dtype": DTYPES[t.dtype][0], "shape": list(t.shape),
                          "data_offsets": [pos, pos + t.nbytes]}
        entries.append((t, pos, pos + t.nbytes))
        pos += t.nbytes
    blob = header_bytes(header)
    return Layout(blob, entries, len(blob), len(blob) + pos, md)


def header_bytes(header, where="the safetensors header"):
    """The 8-byte length and the compact JSON of ``header``, padded with spaces so
    the data starts on a multiple of 8; SpecError past the format's size limit."""
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    if len(text) > MAX_HEADER:
        raise SpecError(f"{where} would be {len(text)} bytes, past the format's limit of "
                        f"{MAX_HEADER}")
    return struct.pack("<Q", len(text)) + text


def read_header(path):
    """(file size, header bytes, parsed header dict) of the file ``path``.

    Raises :class:`FormatError` when the file is too short, its header
    length is impossible, or the header is not a JSON object; OSError when
    it cannot be read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        if len(raw) < 8:
            raise FormatError(f"{path}: {size} bytes, too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise FormatError(f"{path}: header length {n} is not possible in a "
                              f"{size}-byte file")
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: the header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: the header is not a JSON object")
    return size, text, header
