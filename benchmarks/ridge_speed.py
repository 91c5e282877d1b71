"""Seconds to fit the ridge baseline of one subject: our solver, himalaya, scikit-learn.

Usage: python benchmarks/ridge_speed.py [--samples 9800] [--features 768] [--targets 40000]

Same data, same alphas (10, log-spaced), 5 folds, per-target alpha, in one
run: brainencoder's shared-SVD solver (torch, float64 and float32), himalaya's
RidgeCV with the numpy and torch backends, and scikit-learn's RidgeCV
(``alpha_per_target=True``, which scikit-learn allows only with its efficient
leave-one-out CV, so its alphas may differ). Prints seconds, peak-memory increase, and whether
the selected alphas and predictions agree with himalaya's.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=9800)
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--targets", type=int, default=40000)
    parser.add_argument("--skip", nargs="*", default=[], help="solvers to skip")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.samples, args.features)).astype(np.float32)
    W = rng.normal(size=(args.features, args.targets)).astype(np.float32) / 30
    Y = (
        X @ W * rng.uniform(0, 1, args.targets).astype(np.float32)
        + rng.normal(size=(args.samples, args.targets)).astype(np.float32) * 2
    )
    alphas = np.logspace(0, 6, 10)
    X_test = rng.normal(size=(200, args.features)).astype(np.float32)
    print(
        f"{args.samples} samples x {args.features} features -> {args.targets} targets, "
        f"10 alphas, 5 folds, torch {torch.get_num_threads()} threads"
    )
    results = {}

    def timed(name, fn):
        if name in args.skip:
            return
        before = _peak_mib()
        t0 = time.perf_counter()
        alphas_sel, pred = fn()
        results[name] = (time.perf_counter() - t0, _peak_mib() - before, alphas_sel, pred)
        print(
            f"  {name:<24} {results[name][0]:8.1f} s  (+{results[name][1]:6.0f} MiB peak)",
            flush=True,
        )

    from brainencoder.models.solvers import ridge_cv

    def ours(dtype):
        def fit():
            res = ridge_cv(X, Y, alphas, 5, dtype=dtype)
            return res.alphas, res.predict(X_test)

        return fit

    timed("brainencoder (float32)", ours(torch.float32))
    timed("brainencoder (float64)", ours(torch.float64))

    def hima(backend):
        def fit():
            from himalaya.backend import set_backend
            from himalaya.ridge import RidgeCV

            set_backend(backend)
            m = RidgeCV(alphas=alphas, cv=5, fit_intercept=True).fit(X, Y)
            out = m.best_alphas_, m.predict(X_test)
            set_backend("numpy")
            return np.asarray(out[0]), np.asarray(out[1])

        return fit

    timed("himalaya numpy", hima("numpy"))
    timed("himalaya torch", hima("torch"))

    def sk():
        from sklearn.linear_model import RidgeCV

        m = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X, Y)  # efficient LOO (GCV)
        return np.broadcast_to(m.alpha_, (args.targets,)), m.predict(X_test)

    timed("scikit-learn RidgeCV LOO", sk)
    ref = results.get("himalaya numpy")
    if ref is not None:
        print("agreement with himalaya numpy (fraction of equal alphas, max |pred diff|):")
        for name, (_, _, a, p) in results.items():
            same = np.isclose(a, ref[2], rtol=1e-4).mean()
            print(f"  {name:<24} {same:6.3f}  {np.abs(p - ref[3]).max():.2e}")
        print("speed relative to himalaya numpy:")
        for name, (t, *_) in results.items():
            print(f"  {name:<24} {ref[0] / t:6.2f}x")


if __name__ == "__main__":
    main()
