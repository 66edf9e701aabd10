"""``write_model_dir``: a transformers model directory of freshly initialized weights.

From a config (:mod:`.hfmodel`): the safetensors files as ``save_pretrained``
cuts them, each filled through its memory mapping by the model's own init
code (every page range written back and dropped as soon as a write to it
ends, so resident memory stays near the largest tensor), then
``model.safetensors.index.json`` (when there are several files),
``config.json`` and ``generation_config.json``. Files are written in
parallel processes (``workers``) or by independent jobs (``job=(k, n)``):
a file's bytes depend only on (config, dtype, seed, overrides, shard size),
never on who writes it. docs/checkpoint.md, "From a transformers config".
"""

import json
import mmap
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

from ..._contract import check_u64
from . import tmpfile
from .hfmodel import (INDEX_NAME, build_meta, config_dtype, load_config, model_class, plan_dir,
                      rules_of)
from .mmapio import DEFAULT_CHUNK_BYTES, Flusher, drop_pages, preallocate
from .spec import SpecError

_WEIGHT_FILE = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors$")


@dataclass
class DirReport:
    """What write_model_dir did."""
    path: str
    files: list                      # file names this run wrote
    tensors: int                     # tensors in those files
    nbytes: int                      # bytes of those files
    seconds: float
    seed: int
    sharded: bool
    removed: list = field(default_factory=list)   # stale files of an earlier layout


class _Open:
    """One output file while it is filled: its descriptor, mapping, flusher, views."""

    def __init__(self, fp, path):
        self.fp, self.path = fp, path
        self.fd, self.tmp = tmpfile.open_output(path)
        self.mm = self.flusher = None
        try:
            preallocate(self.fd, fp.total, path)
            self.mm = mmap.mmap(self.fd, fp.total)
            self.mm[:fp.data_start] = fp.header
            base = np.frombuffer(self.mm, dtype=np.uint8)
            self.addr = base.ctypes.data
            del base
            # two ranges in flight: resident memory stays near the largest tensors
            self.flusher = Flusher(self.mm, self.fd, self.addr, depth=2)
        except BaseException:
            self.discard()
            raise

    def views(self):
        """{name: torch tensor over its bytes in the mapping}."""
        import torch
        out = {}
        for e in self.fp.entries:
            dt = getattr(torch, e.dtype)
            if e.numel == 0:
                out[e.name] = torch.empty(e.shape, dtype=dt)
            else:
                out[e.name] = torch.frombuffer(self.mm, dtype=dt, count=e.numel,
                                               offset=self.fp.data_start + e.begin
                                               ).view(e.shape)
        return out

    def finish(self):
        """Write everything back and close the mapping (the file stays unnamed)."""
        self.flusher.close()
        self.flusher = None
        self.mm.flush()
        self.mm.close()
        self.mm = None
        os.fsync(self.fd)

    def link(self):
        if self.tmp is None:
            tmpfile.link_into_place(self.fd, self.path)
        else:
            os.replace(self.tmp, self.path)
            self.tmp = None
        os.close(self.fd)
        self.fd = None

    def discard(self):
        """Close everything, quietly (the run is failing already); the unnamed file goes
        with its descriptor, a named temporary is removed."""
        for step in (lambda: self.flusher is not None and self.flusher.close(wait=False),
                     lambda: self.mm is not None and self.mm.close(),
                     lambda: self.tmp is not None and os.unlink(self.tmp),
                     lambda: self.fd is not None and os.close(self.fd)):
            try:
                step()
            except BaseException:
                pass
        self.flusher = self.mm = self.tmp = self.fd = None


def _groups(model):
    """[(tensor, [qualified names], kind)] for each parameter and buffer object."""
    by_id = {}
    for kind, items in (("p", model.named_parameters(remove_duplicate=False)),
                        ("b", model.named_buffers(remove_duplicate=False))):
        for name, t in items:
            g = by_id.setdefault(id(t), (t, [], kind))
            g[1].append(name)
    return list(by_id.values())


def _fill_files(plan, indices, outdir, seed, rules, fill, progress):
    """Open files ``indices`` of ``plan`` in ``outdir`` (unnamed), fill them by the
    model's own init code (or zeros), write them back; the list of _Open."""
    import torch
    from torch import nn

    from ...torch.meta import materialize_into
    opened = []
    try:
        for i in indices:
            fp = plan.files[i]
            opened.append(_Open(fp, os.path.join(outdir, fp.filename)))
        slots, where = {}, {}
        for o in opened:
            for name, v in o.views().items():
                slots[name] = v
            for e in o.fp.entries:
                where[e.name] = (o, o.fp.data_start + e.begin,
                                 o.fp.data_start + e.begin + e.nbytes)
        model = build_meta(plan.config, plan.dtype)
        names_of = {}
        for t, names, kind in _groups(model):
            for n in names:
                names_of[n] = names

        def allocate(m, ties):
            new = {}
            for t, names, kind in _groups(m):
                mine = [n for n in names if n in slots]
                if mine:
                    v = slots[mine[0]]
                    if tuple(v.shape) != tuple(t.shape) or v.dtype != t.dtype:
                        raise SpecError(f"{mine[0]}: the model has {tuple(t.shape)} "
                                        f"{t.dtype}, the plan {tuple(v.shape)} {v.dtype}")
                elif kind == "b":
                    v = torch.empty(t.shape, dtype=t.dtype, device="cpu")
                else:
                    continue                                 # another file's: stays on meta
                new[id(t)] = (nn.Parameter(v, requires_grad=t.requires_grad)
                              if kind == "p" else v)
            for mod in m.modules():
                for slots_of in (mod._parameters, mod._buffers):
                    for local, t in list(slots_of.items()):
                        if t is not None and id(t) in new:
                            slots_of[local] = new[id(t)]

        def on_write(name):
            for n in names_of.get(name, (name,)):
                hit = where.get(n)
                if hit is not None:
                    hit[0].flusher.drop(hit[1], hit[2])
                    return

        if fill == "zeros":
            allocate(model, None)
            for name, v in slots.items():
                if v.numel():
                    v.view(-1).view(torch.uint8).zero_()
                on_write(name)
        else:
            checked = {n for name in slots for n in names_of.get(name, (name,))}
            materialize_into(model, allocate, device="cpu", seed=seed, rules=rules or None,
                             progress=progress, on_write=on_write, checked=checked)
            now = dict(model.named_parameters(remove_duplicate=False))
            now.update(model.named_buffers(remove_duplicate=False))
            for name, v in slots.items():          # replaced by the init code (.data = ...)
                final = now[name]
                if v.numel() and final.data_ptr() != v.data_ptr():
                    if final.is_meta or tuple(final.shape) != tuple(v.shape) \
                            or final.dtype != v.dtype:
                        raise SpecError(f"{name}: the init code replaced it with a tensor "
                                        f"that cannot be saved ({tuple(final.shape)} "
                                        f"{final.dtype} on {final.device})")
                    with torch.no_grad():
                        v.copy_(final)
                    on_write(name)
        model = slots = None          # the views and the model: mapping closable
        for o in opened:
            o.finish()
        return opened
    except BaseException:
        for o in opened:
            o.discard()
        raise


def _write_json(path, obj):
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    tmp = f"{path}.fastinit-{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _config_json(plan):
    import torch
    cfg = plan.config
    cfg.architectures = [plan.model_class]
    cfg.dtype = getattr(torch, plan.dtype)
    return json.loads(cfg.to_json_string(use_diff=True))


def _generation_json(plan):
    try:
        from transformers import GenerationConfig
        cls = model_class(plan.config)
        if not cls.can_generate():
            return None
        return json.loads(GenerationConfig.from_model_config(plan.config).to_json_string(
            use_diff=True))
    except Exception:                       # a model transformers cannot generate with
        return None


def _finish_dir(plan, outdir):
    """index (several files), config.json, generation_config.json; files of another
    layout removed. Returns the removed names."""
    if plan.sharded:
        _write_json(os.path.join(outdir, INDEX_NAME), plan.index())
    _write_json(os.path.join(outdir, "config.json"), _config_json(plan))
    gen = _generation_json(plan)
    if gen is not None:
        _write_json(os.path.join(outdir, "generation_config.json"), gen)
    keep = {fp.filename for fp in plan.files}
    removed = []
    for n in sorted(os.listdir(outdir)):
        if (_WEIGHT_FILE.match(n) and n not in keep) or (n == INDEX_NAME and not plan.sharded):
            os.unlink(os.path.join(outdir, n))
            removed.append(n)
    tmpfile.fsync_dir(outdir)
    return removed


def check_dir(outdir):
    """Create ``outdir`` if its parent exists; a clear OSError if it cannot be one."""
    outdir = os.fspath(outdir)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise NotADirectoryError(f"output {outdir!r} exists and is not a directory")
    if not os.path.isdir(outdir):
        parent = os.path.dirname(os.path.abspath(outdir))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"output {outdir!r}: directory {parent!r} does not exist")
        os.mkdir(outdir)
    if not os.access(outdir, os.W_OK):
        raise PermissionError(f"output {outdir!r} is not writable")
    return outdir


def make_plan(*, config=None, model_type=None, sets=(), dtype=None, seed, overrides=(),
              max_shard_size=None):
    """(plan, rules) of a model directory (nothing written)."""
    from .hfmodel import default_max_shard_size, parse_size
    cfg = load_config(config, model_type, sets)
    dt = config_dtype(cfg, dtype)
    rules = rules_of(overrides)
    size = parse_size(default_max_shard_size() if max_shard_size is None else max_shard_size)
    try:
        plan = plan_dir(cfg, dt, seed, rules=rules, max_shard_size=size)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"{type(exc).__name__}: {exc}") from None
    return plan, rules


def _job_files(plan, job):
    k, n = job
    return [i for i in range(len(plan.files)) if i % n == k - 1]


def _worker(kwargs, outdir, job, progress):
    seed = kwargs["seed"]
    plan, rules = make_plan(**kwargs)
    idx = _job_files(plan, job)
    opened = _fill_files(plan, idx, outdir, seed, rules, "init", progress)
    for o in opened:
        o.link()
    return [o.fp.filename for o in opened]


def write_model_dir(outdir, *, config=None, model_type=None, sets=(), dtype=None, seed,
                    overrides=(), max_shard_size=None, workers=1, job=None, progress=False,
                    fill="init"):
    """Write the model directory of a transformers config into ``outdir``.

    ``config``: a config.json path (or a model directory holding one), or
    ``model_type`` plus ``sets`` ('KEY=VALUE' config overrides). ``dtype``:
    the weights' dtype (default: the config's, else float32). ``overrides``:
    'GLOB=INIT[:JSON]' rules that replace the init code's for matching names.
    ``max_shard_size``: bytes or '5GB'-style text (default transformers').
    ``workers``: processes that write files in parallel. ``job=(k, n)``:
    write only files k-1, k-1+n, ... (1-based k), the index and configs when
    k == 1. ``fill="zeros"``: zeros through the same path (a benchmark's
    reference). Returns a :class:`DirReport`.
    """
    if fill not in ("init", "zeros"):
        raise ValueError(f"fill must be 'init' or 'zeros', got {fill!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    seed = check_u64("seed", seed)
    if job is not None:
        k, n = job
        if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
            raise ValueError(f"job must be (k, n) with 1 <= k <= n, got {job!r}")
        if workers != 1:
            raise ValueError("give either workers or job, not both")
    kwargs = dict(config=config, model_type=model_type, sets=tuple(sets or ()), dtype=dtype,
                  seed=seed, overrides=tuple(overrides or ()), max_shard_size=max_shard_size)
    plan, rules = make_plan(**kwargs)
    created = not os.path.isdir(outdir)
    outdir = check_dir(outdir)
    t0 = time.perf_counter()
    tmpfile.remove_stale(os.path.abspath(outdir))
    done = []
    ok = False
    try:
        if workers > 1 and len(plan.files) > 1:
            import concurrent.futures as cf
            import multiprocessing as mp
            n = min(workers, len(plan.files))
            with cf.ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as ex:
                futs = [ex.submit(_worker, kwargs, outdir, (k, n), False)
                        for k in range(1, n + 1)]
                errors = []
                for f in futs:
                    try:
                        done += f.result()
                    except BaseException as exc:
                        errors.append(exc)
                if errors:
                    raise errors[0]
            written = list(range(len(plan.files)))
        else:
            written = (_job_files(plan, job) if job is not None
                       else list(range(len(plan.files))))
            opened = _fill_files(plan, written, outdir, seed, rules, fill, progress)
            try:
                for o in opened:
                    o.link()
                    done.append(o.fp.filename)
            finally:
                for o in opened:
                    o.discard()
        removed = _finish_dir(plan, outdir) if job is None or job[0] == 1 else []
        ok = True
    finally:
        if not ok and job is None:
            for name in done:                  # all or nothing, within one run
                try:
                    os.unlink(os.path.join(outdir, name))
                except OSError:
                    pass
            if created:                        # and no directory left that this run made
                try:
                    os.rmdir(outdir)           # only if empty
                except OSError:
                    pass
    files = [plan.files[i] for i in written]
    return DirReport(path=outdir, files=[f.filename for f in files],
                     tensors=sum(len(f.entries) for f in files),
                     nbytes=sum(f.total for f in files), seconds=time.perf_counter() - t0,
                     seed=seed, sharded=plan.sharded, removed=removed)


def verify_model_dir(outdir, *, config=None, model_type=None, sets=(), dtype=None, seed,
                     overrides=(), max_shard_size=None, job=None,
                     chunk_bytes=DEFAULT_CHUNK_BYTES, progress=False, max_problems=20):
    """Check a model directory against a regeneration: every file (or job ``(k, n)``'s
    files) byte for byte, and the index against the files. Returns the problems."""
    seed = check_u64("seed", seed)
    plan, rules = make_plan(config=config, model_type=model_type, sets=sets, dtype=dtype,
                            seed=seed, overrides=overrides, max_shard_size=max_shard_size)
    outdir = os.fspath(outdir)
    problems = []
    if plan.sharded:
        try:
            with open(os.path.join(outdir, INDEX_NAME), encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{INDEX_NAME}: {exc}")
        else:
            want = plan.index()
            if index.get("weight_map") != want["weight_map"]:
                problems.append(f"{INDEX_NAME}: the weight_map differs from the plan's")
            if index.get("metadata", {}).get("total_size") != want["metadata"]["total_size"]:
                problems.append(f"{INDEX_NAME}: total_size "
                                f"{index.get('metadata', {}).get('total_size')} != "
                                f"{want['metadata']['total_size']}")
    idx = _job_files(plan, job) if job is not None else list(range(len(plan.files)))
    present = []
    for i in idx:
        path = os.path.join(outdir, plan.files[i].filename)
        if not os.path.isfile(path):
            problems.append(f"{plan.files[i].filename} is missing")
        elif os.path.getsize(path) != plan.files[i].total:
            problems.append(f"{plan.files[i].filename}: {os.path.getsize(path)} bytes, "
                            f"expected {plan.files[i].total}")
        else:
            present.append(i)
    if not present:
        return problems
    opened = _fill_files(plan, present, outdir, seed, rules, "init", progress)
    try:
        for o in opened:
            problems += _compare(o, os.path.join(outdir, o.fp.filename), chunk_bytes)
            if len(problems) >= max_problems:
                break
    finally:
        for o in opened:
            o.discard()
    return problems[:max_problems]


def _compare(o, path, chunk_bytes):
    """Byte differences between the regenerated unnamed file ``o`` and ``path``."""
    fp = o.fp
    with open(path, "rb") as f:
        a = mmap.mmap(f.fileno(), fp.total, access=mmap.ACCESS_READ)
        b = mmap.mmap(o.fd, fp.total, access=mmap.ACCESS_READ)
        try:
            if a[:fp.data_start] != b[:fp.data_start]:
                return [f"{fp.filename}: the header differs from the regenerated one"]
            for e in fp.entries:
                lo = fp.data_start + e.begin
                for pos in range(lo, lo + e.nbytes, chunk_bytes):
                    n = min(chunk_bytes, lo + e.nbytes - pos)
                    if a[pos:pos + n] != b[pos:pos + n]:
                        return [f"{fp.filename}: tensor {e.name!r} differs from its "
                                f"regeneration (bytes [{pos - lo}, {pos - lo + n}))"]
                    drop_pages(a, pos, n)
                    drop_pages(b, pos, n)
        finally:
            a.close()
            b.close()
    return []
