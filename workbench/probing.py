"""The notebook-level probing API: collect a dataset, fit a probe on it, evaluate on another, get a tidy table.

    ds = workbench.collect(agent, ["embedder.block2.res1.resadd_out"], split="ood", episodes=600, seed=0)
    probe = workbench.fit_probe(ds, "embedder.block2.res1.resadd_out", "cheese_in_region", method="logistic")
    probe.evaluate(workbench.collect(agent, [...], split="ood", episodes=300, seed=1))   # -> pandas DataFrame

One call per arrow of the data path; everything below is `workbench.probes` and `workbench.activations`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.data.dataset import ActivationDataset
from workbench.errors import WorkbenchError, unknown
from workbench.metrics import rate
from workbench.probes import (
    LinearProbe,
    SpatialProbe,
    evaluate_probe,
    fit_logistic,
    fit_mass_mean,
    fit_ridge,
    fit_spatial_probe,
    layer_cell_index,
)

METHODS = ("logistic", "mass_mean", "ridge", "spatial")


@dataclass
class FittedProbe:
    """A probe fitted on one hook and one label column of an `ActivationDataset`."""

    hook: str
    target: str
    method: str
    probe: LinearProbe | SpatialProbe
    world: int = 15  # maze world side, for spatial targets given as flat world cells

    def _inputs(self, ds: ActivationDataset) -> tuple[Tensor, np.ndarray]:
        x, y = ds[self.hook], ds.label(self.target)
        if self.method == "spatial":
            return x.double(), layer_cell_index(y, self.world, x.shape[-1])
        return x.flatten(1), y  # float32 activations stay float32 for logistic fits (workbench.logistic)

    def direction(self) -> Tensor:
        """The probe direction in raw activation space: (C,) for spatial probes, (d,) for linear ones."""
        return self.probe.direction() if self.method == "spatial" else self.probe.direction()[0]

    def evaluate(self, ds: ActivationDataset, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Tidy metrics with 95% CIs on `ds`: columns hook, target, method, metric, value, ci_low, ci_high, n."""
        x, y = self._inputs(ds)
        if self.method == "spatial":
            hits = (self.probe.predict(x) == torch.as_tensor(y)).numpy()
            r = rate(hits)
            table = pd.DataFrame(
                [{"metric": "top1", "value": r["rate"], "ci_low": r["ci95"][0], "ci_high": r["ci95"][1], "n": r["n"]}]
            )
        else:
            y_t = torch.as_tensor(y.astype(np.float64 if self.method == "ridge" else np.int64))
            table = evaluate_probe(self.probe, x, y_t, n_boot=n_boot, seed=seed).drop(columns=["probe"])
        return table.assign(hook=self.hook, target=self.target, method=self.method)[
            ["hook", "target", "method", "metric", "value", "ci_low", "ci_high", "n"]
        ]


def fit_probe(
    ds: ActivationDataset, hook: str, target: str, method: str = "logistic", world: int = 15, **kwargs
) -> FittedProbe:
    """Fit a `method` probe predicting label column `target` from activations at `hook`.

    logistic / mass_mean: binary targets (e.g. `cheese_in_region`, `outcome_corner_first`); ridge: continuous
    (e.g. `dist_to_cheese`); spatial: a flat world cell (e.g. `cheese_cell`) read from a conv layer."""
    if method not in METHODS:
        raise unknown("probe method", method, METHODS)
    if target not in ds.labels.columns:
        raise unknown("label", target, list(ds.labels.columns))
    fitted = FittedProbe(hook, target, method, probe=None, world=world)  # type: ignore[arg-type]
    x, y = fitted._inputs(ds)
    if method == "spatial":
        if x.ndim != 4:
            raise WorkbenchError(f"spatial probes need a (C, H, W) layer; {hook} gives {tuple(x.shape[1:])}")
        fitted.probe = fit_spatial_probe(x, torch.as_tensor(y), **kwargs)
    elif method == "ridge":
        fitted.probe = fit_ridge(x, torch.as_tensor(y.astype(np.float64)), **kwargs)
    else:
        fitter = fit_logistic if method == "logistic" else fit_mass_mean
        fitted.probe = fitter(x, torch.as_tensor(y.astype(np.int64)), **kwargs)
    return fitted
