"""Sparse autoencoders on the workbench's subjects, trained and stored the SAELens way.

Why SAELens: its SAE classes (TopK, BatchTopK, JumpReLU, standard L1), its trainer and its on-disk folder
(`cfg.json` + `sae_weights.safetensors`) are what the field uses, so an SAE trained here loads with
`sae_lens.SAE.load_from_disk(folder)` unchanged and a SAELens user can read ours. What the workbench adds:

- `data`      our activation shards as SAELens's data provider (an iterator of (batch, d_in) tensors): each spatial
              position of a conv activation is one d = C token (or the whole flattened activation), each position
              of a residual stream one d_model token; seeded, shuffled, resumable;
- `train`     `train_sae(ds, hook, SAESpec(...))` with SAELens's `SAETrainer`; safetensors checkpoints; `load_sae`;
- `metrics`   L0, explained variance against the mean, MSE, dead / dense latents, fraction recovered (golden tests);
- `subjects`  one interface over a maze policy and a TransformerLens LM: hooks, collection, spliced fidelity;
- `analysis`  latent densities, top-activating examples, goal alignment (AUROC per latent vs probe and
              difference-of-means; cheese cells in the maze, coin cells in CoinRun), and steering with latents next to
              the cheese vector and a random control;
- `lm_analysis` the same for a persona LM: latents ranked against persona / claim-wrong labels vs the logistic probe
              and the sycophancy vector, steering with a latent vs that vector vs a random direction (reusing
              `workbench.lm.steering`'s scoring), top-activating tokens with context;
- `artifact`  `build_sae_artifact`: collect -> train -> evaluate -> write `artifacts/saes/NAME/` with its card.

Submodules are imported on first use, so `import workbench.sae` does not pull in SAELens.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ARCHS": "workbench.sae.train",
    "SAESpec": "workbench.sae.train",
    "train_sae": "workbench.sae.train",
    "load_sae": "workbench.sae.train",
    "save_sae": "workbench.sae.train",
    "LAYOUTS": "workbench.sae.data",
    "ShardTokens": "workbench.sae.data",
    "to_tokens": "workbench.sae.data",
    "from_tokens": "workbench.sae.data",
    "reconstruction_metrics": "workbench.sae.metrics",
    "load_subject": "workbench.sae.subjects",
    "MazeSubject": "workbench.sae.subjects",
    "LMSubject": "workbench.sae.subjects",
    "latent_stats": "workbench.sae.analysis",
    "goal_alignment": "workbench.sae.analysis",
    "top_activating": "workbench.sae.analysis",
    "steering_comparison": "workbench.sae.analysis",
    "build_sae_artifact": "workbench.sae.artifact",
    "lm_subject": "workbench.sae.subjects",
    "lm_goal_alignment": "workbench.sae.lm_analysis",
    "lm_latent_steering": "workbench.sae.lm_analysis",
    "top_activating_tokens": "workbench.sae.lm_analysis",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.sae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
