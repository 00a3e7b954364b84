"""goal-workbench: find, probe and steer the goals trained models actually learned.

The public API, importable as `workbench.NAME` (loaded lazily so `import workbench` stays fast):

    agent = workbench.load_agent("maze-cheese-corner")          # trained policy + its env config
    levels = workbench.levels_for("ood", 100, seed=0, config=agent.env_config)
    rec = workbench.run_episodes(agent.policy, levels, agent.env_config)   # per-episode goal outcomes
    out, cache = workbench.run_with_cache(agent.policy, obs, names_filter="embedder.block2.res1.resadd_out")
    result = workbench.steer_experiment(agent, coef=-1.0, episodes=200)    # cheese vector vs controls
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "WorkbenchError": "workbench.errors",
    "HookPoint": "workbench.hooks",
    "ActivationCache": "workbench.hooks",
    "hook_names": "workbench.hooks",
    "hooks": "workbench.hooks",
    "run_with_hooks": "workbench.hooks",
    "run_with_cache": "workbench.hooks",
    "add_vector": "workbench.interventions",
    "ablate_direction": "workbench.interventions",
    "clamp_channel": "workbench.interventions",
    "patch_with": "workbench.interventions",
    "random_like": "workbench.interventions",
    "sae_splice": "workbench.interventions",
    "clamp_latent": "workbench.interventions",
    "train_sae": "workbench.sae.train",
    "load_sae": "workbench.sae.train",
    "fit_spatial_probe": "workbench.probes",
    "fit_logistic": "workbench.probes",
    "fit_mass_mean": "workbench.probes",
    "fit_ridge": "workbench.probes",
    "evaluate_probe": "workbench.probes",
    "transfer_matrix": "workbench.probes",
    "ActivationDataset": "workbench.data.dataset",
    "collect": "workbench.rl.verbs",
    "collect_maze": "workbench.rl.collect",
    "collect_coinrun": "workbench.rl.collect",
    "fit_probe": "workbench.probing",
    "ResultStore": "workbench.store",
    "load_agent": "workbench.rl.agent",
    "make_agent": "workbench.rl.agent",
    "save_agent": "workbench.rl.agent",
    "Agent": "workbench.rl.agent",
    "load_subject": "workbench.subjects",
    "register_subject": "workbench.subjects",
    "register_kind": "workbench.subjects",
    "SubjectKind": "workbench.subjects",
    "verb": "workbench.subjects",
    "policy_logits": "workbench.policy",
    "MazeConfig": "workbench.rl.envs.maze",
    "MazeLevels": "workbench.rl.envs.maze",
    "MazeVecEnv": "workbench.rl.envs.maze",
    "generate_levels": "workbench.rl.envs.maze",
    "decision_squares": "workbench.rl.envs.maze",
    "observe": "workbench.rl.envs.maze",
    "render": "workbench.rl.envs.maze",
    "levels_for": "workbench.rl.rollout",
    "run_episodes": "workbench.rl.rollout",
    "evaluate": "workbench.rl.rollout",
    "vector_field": "workbench.rl.vector_field",
    "draw_vector_fields": ("workbench.rl.vector_field", "draw"),
    "cheese_vectors": "workbench.rl.steering",
    "steer_experiment": "workbench.rl.steering",
    "cheese_location_probes": "workbench.rl.cheese_probe",
    "train_recipe": "workbench.rl.train",
    "load_lm": "workbench.lm.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
