"""Accuracy of the far-tail inversion of docs/stream.md 4.4, against mpmath.

Runs the plain-NumPy reference (tests/naive.py, bit-identical to the
kernels) and compares with the exact inverse computed by mpmath at 50
digits:

1. erfcinv_far alone: x with -log(2 erfc(x)) = w for the T value w, over
   the whole range the kernels serve (w from the switch at y = 2^-B up to
   the largest w1 the host allows);
2. end to end in the tail form: z for y = 1 - |x| from 2^-B down to the
   smallest normal T, against erfc^-1(y) (the log of section 4.1 included),
   and the step at the switch (Giles' polynomial at y = 2^-B against the
   far inversion just below);
3. the far-tail form: x for (w1, q), q in (0, 1], against the exact
   erfc^-1(e1 q) with -log(2 e1) = w1.

Usage: python bench/far_tail_accuracy.py [points]   (needs mpmath)
"""

import math
import os
import sys

import mpmath as mp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import naive  # noqa: E402

mp.mp.dps = 50


def exact_x(w):
    """x > 0 with -log(2 erfc(x)) = w, by Newton in mpmath."""
    w = mp.mpf(w)
    x = mp.sqrt(w)
    for _ in range(200):
        if x < 1e4:
            ec = mp.erfc(x)
            f = -mp.log(2 * ec) - w
            fp = 2 * mp.exp(-x * x) / (mp.sqrt(mp.pi) * ec)
        else:                       # mpmath's erfc gives up there: its expansion
            iv = 1 / (2 * x * x)
            s = 1 - iv + 3 * iv ** 2 - 15 * iv ** 3 + 105 * iv ** 4 - 945 * iv ** 5
            f = x * x + mp.log(x * mp.sqrt(mp.pi) / 2) - mp.log(s) - w
            fp = 2 * x + 1 / x
        dx = f / fp
        x -= dx
        if abs(dx) < x * mp.mpf(10) ** -40:
            return x
    raise RuntimeError(f"no convergence at w={w}")


def ulps(got, want, t):
    return float(abs((mp.mpf(float(got)) - want) / want)) / float(np.finfo(t).eps)


def main(points=4000):
    for t, B, wmax in ((np.float32, 24, 2.0 ** 119), (np.float64, 53, 2.0 ** 999)):
        name = np.dtype(t).name
        w_switch = -math.log(2.0 ** -(B - 1))
        # 1. erfcinv_far alone, for the T values of w
        w = np.unique(np.concatenate([
            np.geomspace(w_switch, 2 * 745.0, points),
            np.geomspace(2 * 745.0, wmax, points // 4)]).astype(t))
        w = w[w > t(w_switch)]
        x = naive.erfcinv_far(w)
        err = [ulps(xi, exact_x(float(wi)), t) for xi, wi in zip(x, w)]
        i = int(np.argmax(err))
        print(f"{name} erfcinv_far, {w.size} w in [{float(w[0]):.4g}, {float(w[-1]):.4g}]: "
              f"max error {max(err):.3f} ulp ({max(err) * np.finfo(t).eps:.2e} relative) "
              f"at w = {float(w[i]):.6g}")
        # 2. the tail form, y from 2^-B down to the smallest normal T
        k = naive.CONSTS[t]
        lo = math.log2(float(np.finfo(t).tiny))
        y = np.unique((2.0 ** np.linspace(-B, lo, points)).astype(t))
        y = np.concatenate([y, np.nextafter(t(2.0 ** -B), t(0))[None]])
        y = np.unique(y[(y < t(2.0 ** -B)) & (y >= np.finfo(t).tiny)])
        z = naive.erfcinv_far(-naive.log(y * (t(2) - y)))
        err = [ulps(zi, exact_x(-mp.log(2 * mp.mpf(float(yi)))), t) for zi, yi in zip(z, y)]
        i = int(np.argmax(err))
        print(f"{name} tail form, {y.size} y in [{float(y[0]):.3g}, 2^-{B}): max error of z "
              f"against erfc^-1(y) {max(err):.3f} ulp at y = {float(y[i]):.4g}")
        ys = np.array([2.0 ** -B], t)
        below = np.nextafter(ys, t(0))
        z_poly = naive.erfinv(k.one - ys, ys * (t(2) - ys))[0]
        z_far = naive.erfcinv_far(-naive.log(below * (t(2) - below)))[0]
        ex_poly = exact_x(-mp.log(2 * mp.mpf(float(ys[0]))))
        ex_far = exact_x(-mp.log(2 * mp.mpf(float(below[0]))))
        print(f"{name} switch at y = 2^-{B}: polynomial {float(z_poly)!r} "
              f"({ulps(z_poly, ex_poly, t):.2f} ulp), far just below {float(z_far)!r} "
              f"({ulps(z_far, ex_far, t):.2f} ulp); exact step "
              f"{float(ex_far - ex_poly):.3g}, drawn step {float(z_far) - float(z_poly):.3g}")
        # 3. the far-tail form: w = w1 - log(q)
        worst = (0.0, None)
        for w1 in np.geomspace(w_switch * 1.01, wmax / 4, 25).astype(t):
            q = np.unique((2.0 ** -np.linspace(0, B, 60)).astype(t))
            z = naive.erfcinv_far(w1 - naive.log(q))
            for zi, qi in zip(z, q):
                e = ulps(zi, exact_x(mp.mpf(float(w1)) - mp.log(mp.mpf(float(qi)))), t)
                if e > worst[0]:
                    worst = (e, (float(w1), float(qi)))
        print(f"{name} far-tail form: max error of z against erfc^-1(e1 q) for the T values "
              f"of w1 and q: {worst[0]:.3f} ulp at (w1, q) = {worst[1]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
