"""Numba CPU fill kernels for fastinit-philox v2 (docs/stream.md).

A fill works on tiles of ``TILE`` elements aligned to global element
indices, so the blocks of a tile, and therefore its values, never depend on
where a fill starts or which thread runs it. For each tile, one loop runs
Philox and the transform block by block into a small ``vals`` array (the
loop body is straight-line code that LLVM vectorizes), then a second loop
copies the part of the tile that lies in the buffer, converting to
bfloat16/float16 bits when asked.

Buffers arrive as unsigned-integer views (uint32 for float32, uint16 for the
half types, uint64 for float64); ``fmt`` says what the bits mean.
"""

import numpy as np
from numba import njit

from .._abi import (CTL_FMT, CTL_K0, CTL_K1, CTL_OFFSET, CTL_S0, CTL_S1, FMT_BF16,
                    FMT_F32, KIND_NORMAL, KIND_TRUNC, KIND_UNIFORM, TILE)
from ._config import INLINE, INNER, kernel_only
from .philox import (F32, F64, MASK32, SHIFT32, TWO_M24, TWO_M53, bf16_bits,
                     cossin2pi_f32, cossin2pi_f64, erfcinv_far_f32, erfcinv_far_f64,
                     erfinv_xt_f32, erfinv_xt_f64, f16_bits, f32_bits, f64_bits, k24,
                     k24_u32, k53, log_f32, log_f64, philox4x32, to_f32, to_f64)

TILE_U = np.uint64(TILE)
ZERO_F32 = F32(0.0)
HALF_F32, HALF_F64 = F32(0.5), F64(0.5)
ONE_F32, TWO_F32 = F32(1.0), F32(2.0)
ONE_F64, TWO_F64 = F64(1.0), F64(2.0)
ZERO_F64 = F64(0.0)
MINUS2_F32 = F32(-2.0)
I32_ONE = np.int32(1)
U32 = np.uint32
MINUS2_F64 = F64(-2.0)


@njit(**INLINE)
def _block(first_block, jj, k0, k1, s0, s1):
    j = first_block + np.uint64(jj)
    return philox4x32(j & MASK32, j >> SHIFT32, s0, s1, k0, k1)


# --- transforms of one element or pair ---------------------------------------
@njit(**INLINE)
def _clamp(v, floor, top):
    v = floor if v < floor else v
    return top if v > top else v


@njit(**INLINE)
def _uniform(u, lo, d, floor, top, thr, zero):
    v = _clamp(lo + d * u, floor, top)
    return zero if abs(v) < thr else v


@njit(**INLINE)
def _normal_pair32(wa, wb, mean, std):
    """From two uint32 words: all-32-bit work, so the loop runs 16 lanes wide."""
    r = np.sqrt(MINUS2_F32 * log_f32(to_f32(k24_u32(wa) + I32_ONE) * TWO_M24))
    c, s = cossin2pi_f32(k24_u32(wb))
    return mean + std * (r * c), mean + std * (r * s)


@njit(**INLINE)
def _normal_pair64(w0, w1, w2, w3, mean, std):
    r = np.sqrt(MINUS2_F64 * log_f64(to_f64(k53(w0, w1) + 1) * TWO_M53))
    c, s = cossin2pi_f64(k53(w2, w3))
    return mean + std * (r * c), mean + std * (r * s)


# Truncated normal (contract 3.6): y = e0 + de * Um. In the central form
# x = y; in the tail form y = 1 - |x| is drawn directly (erfc space), so a
# deep tail keeps its relative precision. y is clamped so log's argument
# stays a normal float and x never reaches +-1. The form is the same for the
# whole fill. A tile runs in passes: Philox into ``words``, y into ``vals``
# (clamped by the form), then y to its value in place, with one erfinv whose
# arguments the form selects (x = y, t = (1 - y)(1 + y) central; x = 1 - y,
# t = y (2 - y) tail): erfinv is inlined once, and LLVM never evaluates two
# erfinv forms per element (a select between two erfinv results made it
# evaluate both).
#
# v2 (contract 4.4): a tail element with y < 2^-B lies past the range
# Giles' polynomials were fitted for and is inverted by erfcinv_far; the
# far-tail form draws q = y / e1 and w = -log(2y) = w1 - log(q) in log space,
# for intervals wholly past 2^-B (their mass may underflow T). Those run in
# passes over a tile: y (or q) into ``vals``, then the transform in place,
# one element per iteration, so each transform is inlined once. A tail fill
# whose smallest y, e0 + de 2^-B, is at least 2^-B has no far element and
# runs the v1 passes; for the others the y < 2^-B of a tile are gathered
# (indices in ``words``, values in the second half of ``vals``), every
# element gets the v1 transform, the gathered ones erfcinv_far, and are
# scattered back: a fill where 1 element in 10^3 is that far pays about that
# fraction for erfcinv_far, not every element, and every loop but the gather
# and the scatter vectorizes.
BELOW_ONE_F32, TINY_F32 = np.nextafter(F32(1), F32(0)), F32(np.finfo(np.float32).tiny)
BELOW_ONE_F64, TINY_F64 = np.nextafter(F64(1), F64(0)), F64(np.finfo(np.float64).tiny)


# the far transform: w = -log(2y) to its value
@njit(**INNER)
def far_pass32(w, mean, ss, a, b, sign):
    """w[i] = the value of w = -log(2y) (contract 4.4), in place. Not inlined:
    the tail and far-tail forms share one compiled copy."""
    for i in range(w.size):
        w[i] = _clamp(mean + ss * (erfcinv_far_f32(w[i]) * sign), a, b)


@njit(**INNER)
def far_pass64(w, mean, ss, a, b, sign):
    """w[i] = the value of w = -log(2y) (contract 4.4), in place. Not inlined:
    the tail and far-tail forms share one compiled copy."""
    for i in range(w.size):
        w[i] = _clamp(mean + ss * (erfcinv_far_f64(w[i]) * sign), a, b)


# --- one tile of values: vals[e] for the tile's elements ----------------------
# 32-bit: 4 elements per Philox block; 64-bit: 2 elements per block.
# Philox runs first into ``words`` (a tile's words, as uint32), then one
# loop per form applies the transform element by element: each transform is
# inlined once per form, not once per word of a block (Numba inlines before
# LLVM folds a constant flag, so a loop taking the form as a flag would
# inline every form at every call site). Same values, a fraction of the
# compile time.
@njit(**INLINE)
def _words32(words, fb, nb, k0, k1, s0, s1):
    """words[4 jj + i] = word i of block fb + jj (as uint32)."""
    for jj in range(nb):
        x0, x1, x2, x3 = _block(fb, jj, k0, k1, s0, s1)
        words[4 * jj] = U32(x0)
        words[4 * jj + 1] = U32(x1)
        words[4 * jj + 2] = U32(x2)
        words[4 * jj + 3] = U32(x3)


@njit(**INLINE)
def _uniform_form(u, lo, d, floor, top, thr, zero, masked):
    # inlined with a constant ``masked``; unmasked, |v| < thr never holds
    # (thr <= 0), so the compare and select are left out
    if masked:
        return _uniform(u, lo, d, floor, top, thr, zero)
    return _clamp(lo + d * u, floor, top)


@njit(**INLINE)
def _uniform32_loop(vals, fb, nb, k0, k1, s0, s1, lo, d, floor, top, thr, masked):
    for jj in range(nb):
        x0, x1, x2, x3 = _block(fb, jj, k0, k1, s0, s1)
        vals[4 * jj] = _uniform_form(to_f32(k24(x0)) * TWO_M24, lo, d, floor, top, thr,
                                     ZERO_F32, masked)
        vals[4 * jj + 1] = _uniform_form(to_f32(k24(x1)) * TWO_M24, lo, d, floor, top, thr,
                                         ZERO_F32, masked)
        vals[4 * jj + 2] = _uniform_form(to_f32(k24(x2)) * TWO_M24, lo, d, floor, top, thr,
                                         ZERO_F32, masked)
        vals[4 * jj + 3] = _uniform_form(to_f32(k24(x3)) * TWO_M24, lo, d, floor, top, thr,
                                         ZERO_F32, masked)


# The float32 uniform keeps Philox and its cheap transform in one loop: with
# Philox into ``words`` first (as below) it compiled in half the time but ran
# 15-20% slower on one thread (AVX2 development VM).
@njit(**INNER)
def tile_uniform32(vals, fb, nb, k0, k1, s0, s1, p):
    lo, d, floor, top, thr = p
    if thr > ZERO_F32:              # masked_uniform
        _uniform32_loop(vals, fb, nb, k0, k1, s0, s1, lo, d, floor, top, thr, True)
    else:
        _uniform32_loop(vals, fb, nb, k0, k1, s0, s1, lo, d, floor, top, thr, False)


@njit(**INNER)
def tile_normal32(vals, words, fb, nb, k0, k1, s0, s1, p):
    # Two loops: Philox into 32-bit words (64-bit lanes), then the transform
    # on 32-bit lanes only, which LLVM vectorizes twice as wide as it would
    # inside the Philox loop (float32 normal 12-20% faster on one thread).
    mean, std = p
    for jj in range(nb):
        x0, x1, x2, x3 = _block(fb, jj, k0, k1, s0, s1)
        words[4 * jj] = U32(x0)
        words[4 * jj + 1] = U32(x1)
        words[4 * jj + 2] = U32(x2)
        words[4 * jj + 3] = U32(x3)
    for q in range(2 * nb):
        vals[2 * q], vals[2 * q + 1] = _normal_pair32(words[2 * q], words[2 * q + 1], mean, std)


@njit(**INLINE)
def _draw32(vals, words, n, e0, de, ylo, yhi):
    """First pass, from the words: vals = y = min(max(e0 + de * Um, ylo), yhi)."""
    for e in range(n):
        vals[e] = _clamp(e0 + de * (to_f32(k24(np.uint64(words[e])) | 1) * TWO_M24), ylo, yhi)


@njit(**INLINE)
def _trunc32_y(vals, n, central, mean, ss, a, b, sign):
    """Second pass, in place: y to its value, by the form (one erfinv, its
    arguments selected: x = y, t = (1 - y)(1 + y) central; x = 1 - y,
    t = y (2 - y) tail)."""
    for e in range(n):
        y = vals[e]
        x = y if central else ONE_F32 - y
        t = (ONE_F32 - y) * (ONE_F32 + y) if central else y * (TWO_F32 - y)
        z = erfinv_xt_f32(x, t)
        vals[e] = _clamp(mean + ss * (z * sign), a, b)


@njit(**INLINE)
def _far_gather(vals, count, ymax, idx):
    """For the e < count with vals[e] < ymax, in order: idx[n] = e and
    vals[TILE + n] = vals[e]; returns how many (n)."""
    n = 0
    for e in range(count):
        y = vals[e]
        if y < ymax:
            idx[n] = e
            vals[TILE + n] = y
            n += 1
    return n


@njit(**INNER)
def tile_trunc32(vals, words, fb, nb, k0, k1, s0, s1, p):
    e0, de, mean, ss, a, b, tail, sign = p
    _words32(words, fb, nb, k0, k1, s0, s1)
    n = 4 * nb
    far_tail = tail > ONE_F32                           # (q0, w1) in (e0, de)
    central = tail < HALF_F32
    _draw32(vals, words, n, e0, ONE_F32 - e0 if far_tail else de,
            -BELOW_ONE_F32 if central else TINY_F32, BELOW_ONE_F32 if central else ONE_F32)
    if far_tail:
        for e in range(n):
            vals[e] = de - log_f32(vals[e])
        far_pass32(vals[:n], mean, ss, a, b, sign)
        return
    nfar = 0
    if not central and e0 + de * TWO_M24 < TWO_M24:     # a tail with some y below 2^-24:
        nfar = _far_gather(vals, n, TWO_M24, words)     # those are redone apart
    _trunc32_y(vals, n, central, mean, ss, a, b, sign)
    if nfar:
        far = vals[TILE:TILE + nfar]          # indexed from 0: see store32
        for i in range(nfar):
            far[i] = -log_f32(far[i] * (TWO_F32 - far[i]))
        far_pass32(far, mean, ss, a, b, sign)
        for i in range(nfar):
            vals[words[i]] = far[i]


@njit(**INLINE)
def _uniform64_loop(vals, words, n, lo, d, floor, top):
    for e in range(n):
        k = k53(np.uint64(words[2 * e]), np.uint64(words[2 * e + 1]))
        vals[e] = _clamp(lo + d * (to_f64(k) * TWO_M53), floor, top)


@njit(**INLINE)
def _masked_uniform64_loop(vals, words, n, lo, d, floor, top, thr):
    for e in range(n):
        k = k53(np.uint64(words[2 * e]), np.uint64(words[2 * e + 1]))
        vals[e] = _uniform(to_f64(k) * TWO_M53, lo, d, floor, top, thr, ZERO_F64)


@njit(**INNER)
def tile_uniform64(vals, words, fb, nb, k0, k1, s0, s1, p):
    lo, d, floor, top, thr = p
    _words32(words, fb, nb, k0, k1, s0, s1)
    if thr > ZERO_F64:              # masked_uniform
        _masked_uniform64_loop(vals, words, 2 * nb, lo, d, floor, top, thr)
    else:
        _uniform64_loop(vals, words, 2 * nb, lo, d, floor, top)


@njit(**INNER)
def tile_normal64(vals, fb, nb, k0, k1, s0, s1, p):
    mean, std = p
    for jj in range(nb):
        x0, x1, x2, x3 = _block(fb, jj, k0, k1, s0, s1)
        vals[2 * jj], vals[2 * jj + 1] = _normal_pair64(x0, x1, x2, x3, mean, std)


# As for 32 bits: Philox first into ``words`` (two words per element), then
# one loop per form over the elements.
@njit(**INLINE)
def _draw64(vals, words, n, e0, de, ylo, yhi):
    """First pass, from the words: vals = y = min(max(e0 + de * Um, ylo), yhi)."""
    for e in range(n):
        k = k53(np.uint64(words[2 * e]), np.uint64(words[2 * e + 1]))
        vals[e] = _clamp(e0 + de * (to_f64(k | 1) * TWO_M53), ylo, yhi)


@njit(**INLINE)
def _trunc64_y(vals, n, central, mean, ss, a, b, sign):
    """As :func:`_trunc32_y`."""
    for e in range(n):
        y = vals[e]
        x = y if central else ONE_F64 - y
        t = (ONE_F64 - y) * (ONE_F64 + y) if central else y * (TWO_F64 - y)
        z = erfinv_xt_f64(x, t)
        vals[e] = _clamp(mean + ss * (z * sign), a, b)


@njit(**INNER)
def tile_trunc64(vals, words, fb, nb, k0, k1, s0, s1, p):
    e0, de, mean, ss, a, b, tail, sign = p
    _words32(words, fb, nb, k0, k1, s0, s1)
    n = 2 * nb
    far_tail = tail > ONE_F64                           # (q0, w1) in (e0, de)
    central = tail < HALF_F64
    _draw64(vals, words, n, e0, ONE_F64 - e0 if far_tail else de,
            -BELOW_ONE_F64 if central else TINY_F64, BELOW_ONE_F64 if central else ONE_F64)
    if far_tail:
        for e in range(n):
            vals[e] = de - log_f64(vals[e])
        far_pass64(vals[:n], mean, ss, a, b, sign)
        return
    nfar = 0
    if not central and e0 + de * TWO_M53 < TWO_M53:     # a tail with some y below 2^-53:
        nfar = _far_gather(vals, n, TWO_M53, words)     # those are redone apart
    _trunc64_y(vals, n, central, mean, ss, a, b, sign)
    if nfar:
        far = vals[TILE:TILE + nfar]          # indexed from 0: see store32
        for i in range(nfar):
            far[i] = -log_f64(far[i] * (TWO_F64 - far[i]))
        far_pass64(far, mean, ss, a, b, sign)
        for i in range(nfar):
            vals[words[i]] = far[i]


# --- storing a tile -----------------------------------------------------------
# The stores index views from 0: with ``out[dst + e]`` Numba's wraparound for
# a possibly negative index blocks vectorization, and these loops ran 10-40x
# slower.
@njit(**INNER)
def store32(out, fmt, dst, vals, src, count):
    o = out[dst:dst + count]
    v = vals[src:src + count]
    if fmt == FMT_F32:
        for e in range(count):
            o[e] = f32_bits(v[e])
    elif fmt == FMT_BF16:
        for e in range(count):
            o[e] = bf16_bits(v[e])
    else:
        for e in range(count):
            o[e] = f16_bits(v[e])


@njit(**INNER)
def store64(out, fmt, dst, vals, src, count):
    o = out[dst:dst + count]
    v = vals[src:src + count]
    for e in range(count):
        o[e] = f64_bits(v[e])


# --- the entry kernels: one per (distribution, compute precision) ---------------
# ``out`` holds the buffer's bits (uint32 float32, uint16 half, uint64
# float64), ``ctl`` the uint64 words indexed by ``CTL_*``, ``p`` the
# distribution's parameters in the compute type (float32 for float32,
# bfloat16 and float16; float64). A kernel fills ``out`` tile by tile on the
# calling thread: a large fill runs it on pieces of the buffer, one per
# thread, each at its own offset (fastinit/backends/_threads.py). A first
# fill compiles only the kernel of the distribution and precision it draws,
# behind a C entry point (entry.py). Each is a plain top-level function
# calling its tile and store functions directly (no dispatch by type: an
# overload that picked the precision, inlined by Numba, made cold compiles
# slower: docs/design.md). The caller hands over the scratch (the kernels
# allocate nothing): ``vals``, CPU_SCRATCH values (a tile's, then TILE more);
# ``words``, CPU_SCRATCH uint32 (a tile's Philox words, two per element at
# 64 bits), where the tile uses them.
@njit(**INLINE)
def _tile_span(ctl, tile, last, pb):
    """The blocks of ``tile`` the fill needs, and where their values go."""
    offset = ctl[CTL_OFFSET]
    g0 = tile * TILE_U
    g_lo = offset if offset > g0 else g0
    g_end = g0 + (TILE_U - np.uint64(1))
    g_hi = last if last < g_end else g_end
    fb = g_lo // pb
    nb = np.int64(g_hi // pb - fb) + 1
    return fb, nb, np.int64(g_lo - offset), np.int64(g_lo - fb * pb), np.int64(g_hi - g_lo) + 1


@njit(**INLINE)
def _span(out, ctl):
    """(first tile, number of tiles, last global index) of the fill."""
    offset = ctl[CTL_OFFSET]
    last = offset + np.uint64(out.size - 1)
    t_first = offset // TILE_U
    return t_first, np.int64(last // TILE_U - t_first) + 1, last


@njit(**INNER)
def uniform32(out, ctl, p, vals, words):
    t_first, ntiles, last = _span(out, ctl)
    for t in range(ntiles):
        fb, nb, dst, src, count = _tile_span(ctl, t_first + np.uint64(t), last, np.uint64(4))
        tile_uniform32(vals, fb, nb, ctl[CTL_K0], ctl[CTL_K1], ctl[CTL_S0], ctl[CTL_S1], p)
        store32(out, ctl[CTL_FMT], dst, vals, src, count)


@njit(**INNER)
def uniform64(out, ctl, p, vals, words):
    t_first, ntiles, last = _span(out, ctl)
    for t in range(ntiles):
        fb, nb, dst, src, count = _tile_span(ctl, t_first + np.uint64(t), last, np.uint64(2))
        tile_uniform64(vals, words, fb, nb, ctl[CTL_K0], ctl[CTL_K1], ctl[CTL_S0],
                       ctl[CTL_S1], p)
        store64(out, ctl[CTL_FMT], dst, vals, src, count)


@njit(**INNER)
def normal32(out, ctl, p, vals, words):
    t_first, ntiles, last = _span(out, ctl)
    for t in range(ntiles):
        fb, nb, dst, src, count = _tile_span(ctl, t_first + np.uint64(t), last, np.uint64(4))
        tile_normal32(vals, words, fb, nb, ctl[CTL_K0], ctl[CTL_K1], ctl[CTL_S0],
                      ctl[CTL_S1], p)
        store32(out, ctl[CTL_FMT], dst, vals, src, count)


@njit(**INNER)
def normal64(out, ctl, p, vals, words):
    t_first, ntiles, last = _span(out, ctl)
    for t in range(ntiles):
        fb, nb, dst, src, count = _tile_span(ctl, t_first + np.uint64(t), last, np.uint64(2))
        tile_normal64(vals, fb, nb, ctl[CTL_K0], ctl[CTL_K1], ctl[CTL_S0], ctl[CTL_S1], p)
        store64(out, ctl[CTL_FMT], dst, vals, src, count)


@njit(**INNER)
def trunc32(out, ctl, p, vals, words):
    t_first, ntiles, last = _span(out, ctl)
    for t in range(ntiles):
        fb, nb, dst, src, count = _tile_span(ctl, t_first + np.uint64(t), last, np.uint64(4))
        tile_trunc32(vals, words, fb, nb, ctl[CTL_K0], ctl[CTL_K1], ctl[CTL_S0],
                     ctl[CTL_S1], p)
        store32(out, ctl[CTL_FMT], dst, vals, src, count)


@njit(**INNER)
def trunc64(out, ctl, p, vals, words):
    t_first, ntiles, last = _span(out, ctl)
    for t in range(ntiles):
        fb, nb, dst, src, count = _tile_span(ctl, t_first + np.uint64(t), last, np.uint64(2))
        tile_trunc64(vals, words, fb, nb, ctl[CTL_K0], ctl[CTL_K1], ctl[CTL_S0],
                     ctl[CTL_S1], p)
        store64(out, ctl[CTL_FMT], dst, vals, src, count)


# (kind code (kernels/_abi.py), compute precision) -> its kernel
KERNELS = {(KIND_UNIFORM, "float32"): uniform32, (KIND_UNIFORM, "float64"): uniform64,
           (KIND_NORMAL, "float32"): normal32, (KIND_NORMAL, "float64"): normal64,
           (KIND_TRUNC, "float32"): trunc32, (KIND_TRUNC, "float64"): trunc64}

# every kernel guarded against calls from Python (_config.py): they run only
# inside compiled code, the entry kernels behind their C entry points
kernel_only(globals())
