"""Philox4x32-10 and the transforms of the stream contract, for Numba.

The one CPU definition of fastinit-philox v2 (docs/stream.md). Every value
is a 32-bit word held in a uint64, so products are exact 64-bit integers
and LLVM maps them to ``vpmuludq``; every float operation is one IEEE
operation in float32 or float64, in the order the contract writes it.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ._config import INLINE, kernel_only

# --- Philox4x32-10 (Random123) ---------------------------------------------
PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
PHILOX_ROUNDS = 10
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)


@njit(**INLINE)
def philox_round(c0, c1, c2, c3, k0, k1):
    # The masks are free (vpmuludq reads only the low 32 bits of each lane)
    # but let LLVM prove the operands are 32-bit, so it never falls back to
    # a full 64-bit multiply.
    p0 = PHILOX_M0 * (c0 & MASK32)
    p1 = PHILOX_M1 * (c2 & MASK32)
    return ((p1 >> SHIFT32) ^ c1 ^ k0, p1 & MASK32,
            (p0 >> SHIFT32) ^ c3 ^ k1, p0 & MASK32)


@njit(**INLINE)
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Ten rounds on counter (c0..c3) with key (k0, k1); uint64 in and out."""
    c0, c1, c2, c3 = c0 & MASK32, c1 & MASK32, c2 & MASK32, c3 & MASK32
    k0, k1 = k0 & MASK32, k1 & MASK32
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    for _ in range(PHILOX_ROUNDS - 1):
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
        c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    return c0, c1, c2, c3


# --- bit casts ---------------------------------------------------------------
def _bitcast_to(dst):
    """An intrinsic that reinterprets a value's bits as ``dst``.

    Float targets take any integer (truncated or zero-extended to the
    width); integer targets take the float of the same width.
    """
    width = dst.bitwidth

    @intrinsic
    def bitcast(typingctx, x):
        if isinstance(dst, types.Float):
            if not isinstance(x, types.Integer):
                return None
        elif not (isinstance(x, types.Float) and x.bitwidth == width):
            return None

        def codegen(context, builder, sig, args):
            v = args[0]
            if isinstance(dst, types.Float):
                if x.bitwidth > width:
                    v = builder.trunc(v, ir.IntType(width))
                elif x.bitwidth < width:
                    v = builder.zext(v, ir.IntType(width))
            return builder.bitcast(v, context.get_value_type(dst))
        return dst(x), codegen
    return bitcast


f32_bits = _bitcast_to(types.uint32)   # float32 -> its bits
f64_bits = _bitcast_to(types.uint64)   # float64 -> its bits
bits_f32 = _bitcast_to(types.float32)  # low 32 bits of an integer -> float32
bits_f64 = _bitcast_to(types.float64)  # 64 bits -> float64


# --- bits to uniforms (contract 3.1) -----------------------------------------
F32 = np.float32
F64 = np.float64
I32 = np.int32
U32 = np.uint32
TWO_M24 = F32(2.0 ** -24)
TWO_M53 = F64(2.0 ** -53)
SHIFT8 = np.uint64(8)
SHIFT11 = np.uint64(11)


@njit(**INLINE)
def k24(w):
    """The 24 uniform bits of a 32-bit word, as int64."""
    return np.int64(w >> SHIFT8)


@njit(**INLINE)
def k24_u32(w):
    """The 24 uniform bits of a uint32 word, as int32."""
    return I32(w >> U32(8))


@njit(**INLINE)
def k53(lo, hi):
    """The 53 uniform bits of the words (lo, hi), as int64."""
    return np.int64(((hi << SHIFT32) | lo) >> SHIFT11)


@njit(**INLINE)
def to_f32(k):
    return F32(np.int32(k))


@njit(**INLINE)
def to_f64(k):
    return F64(k)


# --- log (contract 4.1) ------------------------------------------------------
LOG_SQRT2_F32 = F32("1.41421356")
LOG_LN2_HI_F32 = F32("0.693359375")
LOG_LN2_LO_F32 = F32("-2.12194440e-4")
LOG_L_F32 = (F32("0.666666667"), F32("0.4"), F32("0.285714286"),
             F32("0.222222222"))
LOG_SQRT2_F64 = F64("1.4142135623730951")
LOG_LN2_HI_F64 = F64("6.93147180369123816490e-01")
LOG_LN2_LO_F64 = F64("1.90821492927058770002e-10")
LOG_L_F64 = (F64("0.66666666666666667"), F64("0.4"),
             F64("0.28571428571428571"), F64("0.22222222222222222"),
             F64("0.18181818181818182"), F64("0.15384615384615385"),
             F64("0.13333333333333333"), F64("0.11764705882352941"),
             F64("0.10526315789473684"))
HALF_F32 = F32(0.5)
HALF_F64 = F64(0.5)
ONE_F32 = F32(1.0)
ONE_F64 = F64(1.0)
TWO_F32 = F32(2.0)
TWO_F64 = F64(2.0)


@njit(**INLINE)
def log_f32(x):
    """Natural log of a normal float32 in (0, 1].

    The integer work is in int32 (exact: x's bits are positive), so a loop
    of float32 draws has no 64-bit lanes and vectorizes at full width.
    """
    b = I32(f32_bits(x))
    e = ((b >> I32(23)) & I32(0xFF)) - I32(127)
    m = bits_f32((b & I32(0x7FFFFF)) | I32(0x3F800000))
    if m > LOG_SQRT2_F32:
        m = m * HALF_F32
        e = e + I32(1)
    f = m - ONE_F32
    s = f / (TWO_F32 + f)
    z = s * s
    L1, L2, L3, L4 = LOG_L_F32
    r = z * (L1 + z * (L2 + z * (L3 + z * L4)))
    hfsq = HALF_F32 * f * f
    lm = f - (hfsq - s * (hfsq + r))
    ef = F32(e)
    return ef * LOG_LN2_HI_F32 + (lm + ef * LOG_LN2_LO_F32)


@njit(**INLINE)
def log_f64(x):
    """Natural log of a normal float64 in (0, 1]."""
    b = np.int64(f64_bits(x))
    e = ((b >> 52) & 0x7FF) - 1023
    m = bits_f64(np.uint64((b & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000))
    if m > LOG_SQRT2_F64:
        m = m * HALF_F64
        e = e + 1
    f = m - ONE_F64
    s = f / (TWO_F64 + f)
    z = s * s
    L1, L2, L3, L4, L5, L6, L7, L8, L9 = LOG_L_F64
    r = z * (L1 + z * (L2 + z * (L3 + z * (L4 + z * (L5 + z * (
        L6 + z * (L7 + z * (L8 + z * L9))))))))
    hfsq = HALF_F64 * f * f
    lm = f - (hfsq - s * (hfsq + r))
    ef = F64(e)
    return ef * LOG_LN2_HI_F64 + (lm + ef * LOG_LN2_LO_F64)


# --- sin2pi / cos2pi (contract 4.2) ------------------------------------------
PIO2_F32 = F32(1.5707963267948966)
PIO2_F64 = F64(1.5707963267948966)
SC_X_F32 = F32(PIO2_F32 * F32(2.0 ** -22))   # exact: a power-of-two scaling
SC_X_F64 = F64(PIO2_F64 * 2.0 ** -51)
SIN_F32 = tuple(F32((-1) ** n / float(np.prod(np.arange(1, 2 * n + 2, dtype=np.float64))))
                for n in range(1, 5))
COS_F32 = tuple(F32((-1) ** n / float(np.prod(np.arange(1, 2 * n + 1, dtype=np.float64))))
                for n in range(2, 6))
SIN_F64 = tuple(F64((-1) ** n / float(np.prod(np.arange(1, 2 * n + 2, dtype=np.float64))))
                for n in range(1, 9))
COS_F64 = tuple(F64((-1) ** n / float(np.prod(np.arange(1, 2 * n + 1, dtype=np.float64))))
                for n in range(2, 10))


@njit(**INLINE)
def _quadrant(c, s, q):
    """(cos, sin) of x + q * pi/2 from C = cos x and S = sin x."""
    swap = (q & 1) == 1
    cc = s if swap else c
    ss = c if swap else s
    q3 = q & 3
    cc = -cc if (q3 == 1 or q3 == 2) else cc
    ss = -ss if q3 >= 2 else ss
    return cc, ss


@njit(**INLINE)
def cossin2pi_f32(k):
    """cos and sin of 2 pi k 2^-24, k an integer in [0, 2^24) (int32 work)."""
    k = I32(k)
    q = (k + I32(1 << 21)) >> I32(22)
    j = k - (q << I32(22))
    x = F32(j) * SC_X_F32
    z = x * x
    S1, S2, S3, S4 = SIN_F32
    C2, C3, C4, C5 = COS_F32
    s = x + (x * z) * (S1 + z * (S2 + z * (S3 + z * S4)))
    c = (ONE_F32 - HALF_F32 * z) + (z * z) * (C2 + z * (C3 + z * (C4 + z * C5)))
    swap = (q & I32(1)) == I32(1)
    cc = s if swap else c
    ss = c if swap else s
    q3 = q & I32(3)
    cc = -cc if (q3 == I32(1) or q3 == I32(2)) else cc
    ss = -ss if q3 >= I32(2) else ss
    return cc, ss


@njit(**INLINE)
def cossin2pi_f64(k):
    """cos and sin of 2 pi k 2^-53, k an int64 in [0, 2^53)."""
    q = (k + (1 << 50)) >> 51
    j = k - (q << 51)
    x = F64(j) * SC_X_F64
    z = x * x
    S1, S2, S3, S4, S5, S6, S7, S8 = SIN_F64
    C2, C3, C4, C5, C6, C7, C8, C9 = COS_F64
    s = x + (x * z) * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * (
        S6 + z * (S7 + z * S8)))))))
    c = (ONE_F64 - HALF_F64 * z) + (z * z) * (C2 + z * (C3 + z * (C4 + z * (
        C5 + z * (C6 + z * (C7 + z * (C8 + z * C9)))))))
    return _quadrant(c, s, q)


# --- erfinv (contract 4.3; Giles 2011, published coefficients) ---------------
ERFINV_A_F32 = tuple(F32(v) for v in (
    "2.81022636e-08", "3.43273939e-07", "-3.5233877e-06", "-4.39150654e-06",
    "0.00021858087", "-0.00125372503", "-0.00417768164", "0.246640727",
    "1.50140941"))
ERFINV_B_F32 = tuple(F32(v) for v in (
    "-0.000200214257", "0.000100950558", "0.00134934322", "-0.00367342844",
    "0.00573950773", "-0.0076224613", "0.00943887047", "1.00167406",
    "2.83297682"))
ERFINV_A_F64 = tuple(F64(v) for v in (
    "-3.6444120640178196996e-21", "-1.685059138182016589e-19",
    "1.2858480715256400167e-18", "1.115787767802518096e-17",
    "-1.333171662854620906e-16", "2.0972767875968561637e-17",
    "6.6376381343583238325e-15", "-4.0545662729752068639e-14",
    "-8.1519341976054721522e-14", "2.6335093153082322977e-12",
    "-1.2975133253453532498e-11", "-5.4154120542946279317e-11",
    "1.051212273321532285e-09", "-4.1126339803469836976e-09",
    "-2.9070369957882005086e-08", "4.2347877827932403518e-07",
    "-1.3654692000834678645e-06", "-1.3882523362786468719e-05",
    "0.0001867342080340571352", "-0.00074070253416626697512",
    "-0.0060336708714301490533", "0.24015818242558961693",
    "1.6536545626831027356"))
ERFINV_B_F64 = tuple(F64(v) for v in (
    "2.2137376921775787049e-09", "9.0756561938885390979e-08",
    "-2.7517406297064545428e-07", "1.8239629214389227755e-08",
    "1.5027403968909827627e-06", "-4.013867526981545969e-06",
    "2.9234449089955446044e-06", "1.2475304481671778723e-05",
    "-4.7318229009055733981e-05", "6.8284851459573175448e-05",
    "2.4031110387097893999e-05", "-0.0003550375203628474796",
    "0.00095328937973738049703", "-0.0016882755560235047313",
    "0.0024914420961078508066", "-0.0037512085075692412107",
    "0.005370914553590063617", "1.0052589676941592334",
    "3.0838856104922207635"))
ERFINV_C_F64 = tuple(F64(v) for v in (
    "-2.7109920616438573243e-11", "-2.5556418169965252055e-10",
    "1.5076572693500548083e-09", "-3.7894654401267369937e-09",
    "7.6157012080783393804e-09", "-1.4960026627149240478e-08",
    "2.9147953450901080826e-08", "-6.7711997758452339498e-08",
    "2.2900482228026654717e-07", "-9.9298272942317002539e-07",
    "4.5260625972231537039e-06", "-1.9681778105531670567e-05",
    "7.5995277030017761139e-05", "-0.00021503011930044477347",
    "-0.00013871931833623122026", "1.0103004648645343977",
    "4.8499064014085844221"))
ERFINV_SPLIT_F32 = F32(5.0)
ERFINV_SHIFT_A_F32 = F32(2.5)
ERFINV_SHIFT_B_F32 = F32(3.0)
ERFINV_SPLIT1_F64 = F64(6.25)
ERFINV_SPLIT2_F64 = F64(16.0)
ERFINV_SHIFT_A_F64 = F64(3.125)
ERFINV_SHIFT_B_F64 = F64(3.25)
ERFINV_SHIFT_C_F64 = F64(5.0)


def horner(coeffs, x):
    """coeffs[0] x^(n-1) + ... + coeffs[n-1], as (((c0 x + c1) x + c2) ...)."""


@overload(horner, jit_options=INLINE)
def _horner_unrolled(coeffs, x):
    # Written out term by term: a loop over the tuple stays a loop when it is
    # long (the float64 erfinv has 23 terms), and an inner loop stops LLVM
    # from vectorizing the tile loop around it. Compiled once per tuple type
    # and inlined by LLVM (``INLINE``): as a Numba-inlined overload
    # (``inline="always"``) its IR was copied and retyped at every call site,
    # 0.5-1 s of the float64 truncated normal's cold compile.
    if not isinstance(coeffs, types.UniTuple):
        return None
    lines = ["def horner_n(coeffs, x):", "    p = coeffs[0]"]
    lines += [f"    p = coeffs[{i}] + p * x" for i in range(1, coeffs.count)]
    lines.append("    return p")
    scope = {}
    exec("\n".join(lines), scope)
    return scope["horner_n"]


@njit(**INLINE)
def erfinv_xw_f32(x, w):
    """erfinv(x) given w = -log((1 - x)(1 + x))."""
    if w < ERFINV_SPLIT_F32:
        p = horner(ERFINV_A_F32, w - ERFINV_SHIFT_A_F32)
    else:
        p = horner(ERFINV_B_F32, np.sqrt(w) - ERFINV_SHIFT_B_F32)
    return p * x


@njit(**INLINE)
def erfinv_xt_f32(x, t):
    """erfinv(x) given t = (1 - x)(1 + x), which the caller may know better."""
    return erfinv_xw_f32(x, -log_f32(t))


@njit(**INLINE)
def erfinv_xt_f64(x, t):
    """erfinv(x) given t = (1 - x)(1 + x), which the caller may know better."""
    return erfinv_xw_f64(x, -log_f64(t))


@njit(**INLINE)
def erfinv_xw_f64(x, w):
    """erfinv(x) given w = -log((1 - x)(1 + x)).

    All three forms are evaluated and one is selected, with no branch, so
    the tile loops vectorize (with branches LLVM kept them scalar, 7x
    slower).
    """
    r = np.sqrt(w)
    pa = horner(ERFINV_A_F64, w - ERFINV_SHIFT_A_F64)
    pb = horner(ERFINV_B_F64, r - ERFINV_SHIFT_B_F64)
    pc = horner(ERFINV_C_F64, r - ERFINV_SHIFT_C_F64)
    p = pc
    if w < ERFINV_SPLIT2_F64:
        p = pb
    if w < ERFINV_SPLIT1_F64:
        p = pa
    return p * x


# --- the far tail: erfc(x) = exp(-w) / 2 for w beyond Giles' range (contract 4.4) ---
# -log(2 erfc(x)) = u + log(x sqrt(pi) / 2) - log(S) with u = x^2 and
# S = x sqrt(pi) exp(x^2) erfc(x) = v / D, v = 2u, D the even continued fraction
# D = v + 1 - 1*2 / (v + 5 - 3*4 / (v + 9 - 5*6 / (v + 13 - ...))), so
# u - w = log(h) / 2 with h = 16 u / (pi D^2). A first guess from the
# asymptotic expansion, then Newton steps on g(u) = u - w - log(h) / 2 with
# g'(u) ~ 1 + 1/(2u) - 1/(2u^2) + 5/(4u^3); x = sqrt(u).
FAR_C0_F32 = F32("1.2732395447351627")      # 4 / pi
FAR_K_F32 = F32("5.0929581789406507")       # 16 / pi
FAR_D3_F32 = F32(1.25)
FAR_C0_F64 = F64("1.2732395447351627")
FAR_K_F64 = F64("5.0929581789406507")
FAR_D3_F64 = F64(1.25)
# (4k - 3, (2k - 1) 2k) for k = N .. 1, and the innermost 4N + 1:
# N = 3 for float32, 6 for float64
FAR_CF_F32 = tuple((F32(4 * k - 3), F32((2 * k - 1) * 2 * k)) for k in range(3, 0, -1))
FAR_CF0_F32 = F32(13.0)
FAR_CF_F64 = tuple((F64(4 * k - 3), F64((2 * k - 1) * 2 * k)) for k in range(6, 0, -1))
FAR_CF0_F64 = F64(25.0)


@njit(**INLINE)
def _far_step_f32(u, w):
    v = u + u
    d = v + FAR_CF0_F32
    (c3, n3), (c2, n2), (c1, n1) = FAR_CF_F32
    d = (v + c3) - n3 / d
    d = (v + c2) - n2 / d
    d = (v + c1) - n1 / d
    h = (FAR_K_F32 * (u / d)) / d
    g = (u - w) - HALF_F32 * log_f32(h)
    iu = ONE_F32 / u
    return u - g / (ONE_F32 + iu * (HALF_F32 - iu * (HALF_F32 - FAR_D3_F32 * iu)))


@njit(**INLINE)
def erfcinv_far_f32(w):
    """x > 0 with -log(2 erfc(x)) = w, for w > 15.9 (y = erfc(x) < 2^-24)."""
    a = HALF_F32 * log_f32(FAR_C0_F32 / w)
    u = (w + a) - (a + ONE_F32) / (w + w)
    u = _far_step_f32(u, w)
    return np.sqrt(u)


@njit(**INLINE)
def _far_step_f64(u, w):
    v = u + u
    d = v + FAR_CF0_F64
    (c6, n6), (c5, n5), (c4, n4), (c3, n3), (c2, n2), (c1, n1) = FAR_CF_F64
    d = (v + c6) - n6 / d
    d = (v + c5) - n5 / d
    d = (v + c4) - n4 / d
    d = (v + c3) - n3 / d
    d = (v + c2) - n2 / d
    d = (v + c1) - n1 / d
    h = (FAR_K_F64 * (u / d)) / d
    g = (u - w) - HALF_F64 * log_f64(h)
    iu = ONE_F64 / u
    return u - g / (ONE_F64 + iu * (HALF_F64 - iu * (HALF_F64 - FAR_D3_F64 * iu)))


@njit(**INLINE)
def erfcinv_far_f64(w):
    """x > 0 with -log(2 erfc(x)) = w, for w > 36.0 (y = erfc(x) < 2^-53)."""
    a = HALF_F64 * log_f64(FAR_C0_F64 / w)
    u = (w + a) - (a + ONE_F64) / (w + w)
    u = _far_step_f64(u, w)
    u = _far_step_f64(u, w)
    return np.sqrt(u)


@njit(**INLINE)
def erfinv_f32(x):
    return erfinv_xt_f32(x, (ONE_F32 - x) * (ONE_F32 + x))


@njit(**INLINE)
def erfinv_f64(x):
    return erfinv_xt_f64(x, (ONE_F64 - x) * (ONE_F64 + x))


# --- float32 to half precision (contract 5) ----------------------------------
@njit(**INLINE)
def bf16_bits(v):
    """bfloat16 bits of a float32 (round to nearest even, no NaN input)."""
    b = np.int64(f32_bits(v))
    return np.uint16((b + 0x7FFF + ((b >> 16) & 1)) >> 16)


F16_HALF_MAGIC = F32(0.5)  # bits 0x3F000000: aligns a half subnormal's lsb


@njit(**INLINE)
def f16_bits(v):
    """IEEE binary16 bits of a float32, round to nearest even, no NaN input."""
    b = np.int64(f32_bits(v))
    sign = (b >> 16) & 0x8000
    a = b & 0x7FFFFFFF
    if a >= 0x47800000:            # >= 65536: infinity
        h = np.int64(0x7C00)
    elif a < 0x38800000:           # below 2^-14: subnormal or zero
        h = np.int64(f32_bits(bits_f32(a) + F16_HALF_MAGIC)) - 0x3F000000
    else:
        h = (a - 0x38000000 + 0xFFF + ((a >> 13) & 1)) >> 13
    return np.uint16(h | sign)


# kernels/cpu/_config.py: the helpers have no Python entry point
kernel_only(globals())
