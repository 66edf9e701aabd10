"""``verify_checkpoint``: a written file checked against its spec, header and values.

The header must be exactly the JSON fastinit writes; every value is
recomputed chunk by chunk and compared bit for bit, in bounded memory.
"""

import json
import mmap
import os

import numpy as np

from ..._contract import check_u64
from ...buffers import empty
from .mmapio import DEFAULT_CHUNK_BYTES, chunks, drop_pages, progress_bar, tensor_done
from .safetensors import FormatError, layout, read_header
from .spec import fans_of, fill_range, load_spec, np_dtype


class VerifyError(Exception):
    """A written file that does not match its spec; ``problems`` lists what differs."""

    def __init__(self, problems):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _describe(a):
    return repr(float(a)) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else repr(a)


def _header_problems(header, expected, seed):
    """What differs between a file's parsed header and the expected one."""
    problems = []
    got_md, want_md = header.get("__metadata__", {}), expected["__metadata__"]
    if isinstance(got_md, dict) and got_md.get("fastinit.seed") not in (None, str(seed)):
        problems.append(f"the file was written with seed {got_md['fastinit.seed']}, "
                        f"not {seed} (pass that --seed)")
    for k in sorted(set(want_md) | set(got_md if isinstance(got_md, dict) else {})):
        if isinstance(got_md, dict) and got_md.get(k) != want_md.get(k) \
                and k != "fastinit.seed":
            problems.append(f"metadata {k!r}: expected {want_md.get(k)!r}, "
                            f"found {got_md.get(k)!r}")
    for name in expected:
        if name != "__metadata__" and name not in header:
            problems.append(f"tensor {name!r} is missing from the file")
    for name in header:
        if name not in expected:
            problems.append(f"unexpected tensor {name!r} in the file")
        elif name != "__metadata__" and header[name] != expected[name]:
            problems.append(f"tensor {name!r}: header {header[name]} != expected "
                            f"{expected[name]}")
    return problems or ["the header differs from the expected one"]


def verify_checkpoint(path, spec, seed, *, chunk_bytes=DEFAULT_CHUNK_BYTES, progress=False,
                      max_problems=20):
    """Re-read checkpoint ``path`` and compare it with ``spec`` written with ``seed``.

    Checks the header (exactly the JSON fastinit writes: names, dtypes,
    shapes, offsets, metadata), the file size, and every value, recomputed
    chunk by chunk (memory stays near ``chunk_bytes``). Returns the list of
    problems, empty when the file matches.
    """
    spec = load_spec(spec)
    seed = check_u64("seed", seed)
    lay = layout(spec, seed)
    problems = []
    path = os.fspath(path)
    try:
        size, text, header = read_header(path)
    except FormatError as exc:
        return [str(exc)]
    expected = json.loads(lay.header[8:].decode("utf-8"))
    if header != expected:
        return _header_problems(header, expected, seed)[:max_problems]
    if text != lay.header[8:]:
        problems.append("the header bytes differ from fastinit's (same content)")
    if size != lay.total:
        return problems + [f"{path}: {size} bytes, expected {lay.total}"]
    if lay.total == lay.data_start:
        return problems
    scratch = {}
    bar = progress_bar(lay, progress, "fastinit verify")
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), lay.total, access=mmap.ACCESS_READ)
        try:
            for done, (t, begin, _) in enumerate(lay.entries, 1):
                dt = np_dtype(t.dtype)
                bits = np.dtype(f"u{t.itemsize}")
                fans = fans_of(t)
                for start, cnt in chunks(t, chunk_bytes):
                    pos = lay.data_start + begin + start * t.itemsize
                    got = np.frombuffer(mm, dtype=dt, count=cnt, offset=pos)
                    buf = scratch.get(t.dtype)
                    if buf is None or buf.size < cnt:
                        buf = scratch[t.dtype] = empty(max(cnt, chunk_bytes // t.itemsize),
                                                       t.dtype)
                    want = buf[:cnt]
                    fill_range(t, want, start, seed, fans)
                    diff = np.flatnonzero(got.view(bits) != want.view(bits))
                    if diff.size:
                        i = int(diff[0])
                        idx = np.unravel_index(start + i, t.shape) if t.shape else ()
                        problems.append(
                            f"tensor {t.name!r}: {diff.size} element(s) differ in elements "
                            f"[{start}, {start + cnt}); first at index "
                            f"{tuple(int(x) for x in idx)}: expected {_describe(want[i])}, "
                            f"found {_describe(got[i])}")
                        del got
                        break
                    del got
                    bar.update(cnt * t.itemsize)
                    drop_pages(mm, pos, cnt * t.itemsize)
                tensor_done(bar, done, lay)
                if len(problems) >= max_problems:
                    break
        finally:
            bar.close()
            try:
                mm.close()
            except BufferError:             # a view still alive in a traceback: GC
                pass
    return problems
