"""`workbench eval PATH.pth --env procgen-maze|procgen-coinrun`: a published-format checkpoint on real procgen.

Kept out of cli.py so the CLI's own module stays small and procgen (an optional extra) is imported only here.
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WorkbenchError, unknown

ENVS = {"procgen-maze": "maze", "procgen-coinrun": "coinrun"}


def eval_procgen(checkpoint: str, env: str, split: str, episodes: int, seed: int) -> dict:
    """Evaluate a published-format `.pth` checkpoint; the JSON-ready summary the CLI prints."""
    from workbench.rl.envs.procgen import SPLITS
    from workbench.rl.procgen_run import run_procgen_episodes
    from workbench.rl.published import load_published

    if env not in ENVS:
        raise unknown("env", env, ["native", *ENVS])
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    if not Path(checkpoint).exists():
        raise WorkbenchError(f"checkpoint {checkpoint!r} does not exist (procgen envs take a published-format .pth)")
    policy = load_published(checkpoint)
    summary = run_procgen_episodes(policy, ENVS[env], split, episodes, seed).rates()
    out = {
        "checkpoint": str(checkpoint),
        "env": env,
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "rates": summary["rates"],
        "ci95": summary["ci95"],
        "informative": summary["informative"],
    }
    if "died" in summary:
        out["died"] = summary["died"]
    return out
