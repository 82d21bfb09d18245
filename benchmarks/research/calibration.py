"""Research: which validation errors should set the conformal quantiles? Offline, on the per-refit dumps of
``benchmarks/neural_residual.py --dump-calibration DIR`` (each refit's validation-block errors, and its test
forecasts with their actuals).

    python benchmarks/research/calibration.py /tmp/dev/cal/pjm-east-2016/without

Variants (per lead hour, spread per origin hour within ±2 h around a pooled centre, as the model does):
  pooled       every validation block's errors (what the model does)
  last         the last block's only (the season the forecasts are in)
  rescaled     every block's errors divided by that block's mean |error|, times the last block's
  weighted     every block's errors weighted by a Gaussian of its distance in days to the forecasts (60 days)
Reports P10-P90 coverage (with the adaptive interval scale as the model computed it, and without) and the
MAPE of the point (the median moved by the variant's own spread).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

P10_P90_WIDTH_IN_SIGMAS = 2.5631


def weighted_quantile(values: np.ndarray, q: float, weights: np.ndarray) -> np.ndarray:
    """Per column of ``values`` (rows, cols), the weighted ``q`` quantile."""
    order = np.argsort(values, axis=0)
    sorted_values = np.take_along_axis(values, order, axis=0)
    w = weights[order]
    cum = np.cumsum(w, axis=0) / w.sum(axis=0)
    index = (cum < q).sum(axis=0).clip(max=len(values) - 1)
    return sorted_values[index, np.arange(values.shape[1])]


def offsets(errors, hours, weights, quantiles=(0.1, 0.5, 0.9), width=2):
    centre = weighted_quantile(errors, 0.5, weights)
    out = {}
    for q in quantiles:
        rows = []
        for h in range(24):
            d = np.abs(hours - h)
            near = np.minimum(d, 24 - d) <= width
            e, w = errors[near], weights[near]
            rows.append(weighted_quantile(e, q, w) - weighted_quantile(e, 0.5, w))
        out[q] = np.stack(rows) + centre
    low, high = weighted_quantile(errors, 0.1, weights), weighted_quantile(errors, 0.9, weights)
    adjust = -(((high - low) / P10_P90_WIDTH_IN_SIGMAS) ** 2)
    return out, adjust


def variant(name, z):
    errors, block = z["errors"], z["block"]
    last = block.max()
    if name == "pooled":
        return errors, np.ones(len(errors))
    if name == "last":
        keep = block == last
        return errors[keep], np.ones(keep.sum())
    if name == "rescaled":
        scale_last = np.abs(errors[block == last]).mean()
        scaled = errors.copy()
        for b in np.unique(block):
            scaled[block == b] *= scale_last / np.abs(errors[block == b]).mean()
        return scaled, np.ones(len(errors))
    if name == "weighted":
        days = (last - block) * 91.0
        return errors, np.exp(-0.5 * (days / 60.0) ** 2)
    raise ValueError(name)


def main() -> None:
    folder = Path(sys.argv[1])
    files = sorted(folder.glob("refit_*.npz"))
    print(f"{folder}: {len(files)} refits")
    for name in ("pooled", "last", "rescaled", "weighted"):
        covered, covered_fixed, ape, days = [], [], [], 0
        for f in files:
            z = dict(np.load(f))
            errors, weights = variant(name, z)
            hours = z["hours"] if name != "last" else z["hours"][z["block"] == z["block"].max()]
            q, adjust = offsets(errors, hours, weights)
            th = z["test_hour"].astype(int)
            scale = z["scale"] if z["scale"] is not None and z["scale"].shape else np.ones(len(th))
            final, actual = z["final"], z["actual"]
            ok = np.isfinite(actual).all(axis=1)
            for s, store in ((scale[:, None], covered), (1.0, covered_fixed)):
                p10 = np.exp(final + s * q[0.1][th])
                p90 = np.exp(final + s * q[0.9][th])
                store.append(((actual >= p10) & (actual <= p90))[ok])
            point = np.exp(final + scale[:, None] ** 2 * adjust[None, :])
            ape.append(np.abs(point / actual - 1)[ok])
            days += ok.sum()
        cov = np.concatenate(covered).mean() * 100
        cov_fixed = np.concatenate(covered_fixed).mean() * 100
        print(f"  {name:>9}: P10-P90 coverage {cov:5.1f} % (without the adaptive scale {cov_fixed:5.1f} %), "
              f"point MAPE {np.concatenate(ape).mean() * 100:.3f} %  ({days} days)")


if __name__ == "__main__":
    main()
