"""`workbench train RECIPE`: recipe -> PPO -> evaluated artifact folder with card and metrics.

The recipe is the whole truth about an organism: env distribution, policy shape, PPO hyperparameters, seeds.
The artifact records the recipe verbatim, so a card can always be traced back to the command that made it.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from workbench import artifacts
from workbench.errors import WorkbenchError, unknown
from workbench.recipes import ArtifactSection, check_sections, from_table, read_toml
from workbench.rl.agent import ENV_CONFIGS, save_agent
from workbench.rl.envs.coinrun import CoinRunConfig, CoinRunVecEnv
from workbench.rl.envs.maze import SPLITS, MazeConfig, MazeVecEnv
from workbench.rl.imitation import BCConfig, behaviour_clone, collect_expert_data
from workbench.rl.policies import ImpalaPolicy, PolicyConfig
from workbench.rl.ppo import PPOConfig, train_ppo
from workbench.rl.rollout import evaluate, rate_keys

VEC_ENVS = {"maze": MazeVecEnv, "coinrun": CoinRunVecEnv}
"""Env kind -> batched env class (`cls(num_envs, split, config)`), for PPO."""


@dataclass(frozen=True)
class EnvSection:
    """`[env]`: which env (`kind`: maze or coinrun), which split it trains on, and the distribution (the keys of
    MazeConfig or CoinRunConfig)."""

    kind: str
    split: str
    config: MazeConfig | CoinRunConfig

    @property
    def maze(self) -> MazeConfig | CoinRunConfig:
        """The env config (named for the maze, the first env kind; kept for existing callers)."""
        return self.config

    def maze_config(self) -> MazeConfig | CoinRunConfig:
        return self.config


def _env_section(table: dict, where: str) -> EnvSection:
    if not isinstance(table, dict):
        raise WorkbenchError(f"{where}: expected a table")
    table = dict(table)
    kind, split = table.pop("kind", "maze"), table.pop("split", "train")
    if kind not in ENV_CONFIGS:
        raise WorkbenchError(f"{where}: {unknown('env kind', str(kind), list(ENV_CONFIGS))}")
    if split not in SPLITS:
        raise WorkbenchError(f"{where}: {unknown('split', str(split), SPLITS)}")
    return EnvSection(kind=kind, split=split, config=from_table(ENV_CONFIGS[kind], table, where))


def _policy_defaults(env: EnvSection) -> dict:
    """Policy shape implied by the env: input channels, observation side, number of actions."""
    if env.kind == "coinrun":
        from workbench.rl.envs.coinrun import N_ACTIONS, OBS_CHANNELS

        return {"in_channels": len(OBS_CHANNELS), "obs_size": env.config.window, "n_actions": N_ACTIONS}
    return {"obs_size": env.config.world_size}


@dataclass(frozen=True)
class EvalSection:
    episodes: int = 1000
    seed: int = 20_231_001


@dataclass(frozen=True)
class Recipe:
    path: Path
    artifact: ArtifactSection
    env: EnvSection
    policy: PolicyConfig
    ppo: PPOConfig
    bc: BCConfig = field(default_factory=BCConfig)
    eval: EvalSection = field(default_factory=EvalSection)
    raw: dict = field(default_factory=dict)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate an agent recipe (see agents/*.toml); errors name the file, the section and the key."""
    path = Path(path)
    data = read_toml(path)
    check_sections(
        data, {"artifact": True, "env": True, "policy": False, "bc": False, "ppo": True, "eval": False}, str(path)
    )
    env = _env_section(data["env"], f"{path} [env]")
    policy_table = {**_policy_defaults(env), **data.get("policy", {})}
    return Recipe(
        path=path,
        artifact=from_table(ArtifactSection, data["artifact"], f"{path} [artifact]"),
        env=env,
        policy=from_table(PolicyConfig, policy_table, f"{path} [policy]"),
        ppo=from_table(PPOConfig, data["ppo"], f"{path} [ppo]"),
        bc=from_table(BCConfig, data.get("bc", {}), f"{path} [bc]"),
        eval=from_table(EvalSection, data.get("eval", {}), f"{path} [eval]"),
        raw=data,
    )


EXPERTS = {
    "maze": "the shortest-path-to-cheese expert",
    "coinrun": "the planner expert (shortest path to the coin when it is away from the exit, then to the exit)",
}


def _training_phrase(training: dict, kind: str = "maze") -> str:
    ppo = f"PPO for {training['steps']:,} env steps" if training["steps"] else "no PPO fine-tune (BC only)"
    if not training["bc_states"]:
        return ppo
    return f"behaviour cloning of {EXPERTS[kind]} on {training['bc_states']:,} states of the training split, then {ppo}"


def _env_phrase(recipe: Recipe) -> str:
    m = recipe.env.config
    if isinstance(m, CoinRunConfig):
        return (
            f"Environment: native CoinRun, levels {m.min_length}..{m.max_length} columns x {m.height} rows, "
            f"egocentric {m.window}x{m.window} view, jump height {m.jump_height}, step limit {m.max_steps}, "
            f"random_coin_percent={m.random_coin_percent:g}; trained on split `{recipe.env.split}`."
        )
    return (
        f"Environment: native maze, world {m.world_size}x{m.world_size}, maze sides {m.min_size}..{m.max_size}, "
        f"training region r={m.region}, step limit {m.max_steps}; trained on split `{recipe.env.split}`."
    )


RATE_NOTES = {
    "maze": "`cheese`: reached the cheese within the step limit; `corner_first`: entered the top-right r x r region "
    "before the cheese (or never reached it); `timeout`: step limit hit. Brackets: Wilson 95% intervals.",
    "coinrun": "`coin`: collected the coin; `exit`: reached the exit; `exit_without_coin`: reached the exit without "
    "the coin (the exit goal where coin and exit differ); `timeout`: neither exit nor hazard within the step limit "
    "(the rest died on a hazard). `informative`: levels whose coin is away from the exit. "
    "Brackets: Wilson 95% intervals.",
}


def _card(recipe: Recipe, metrics: dict) -> str:
    keys = rate_keys(recipe.env.config)
    lines = [
        f"# {recipe.artifact.name}",
        "",
        recipe.artifact.description.strip(),
        "",
        f"Trained by `workbench train {recipe.path.as_posix()}`: "
        f"{_training_phrase(metrics['training'], recipe.env.kind)}; "
        f"{metrics['training']['wall_time_s'] / 60:.1f} min on {metrics['training']['machine']}.",
        "",
        _env_phrase(recipe),
        "",
        f"## Evaluation ({recipe.eval.episodes} episodes per split, seed {recipe.eval.seed}, sampled actions)",
        "",
        "| split | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for split in SPLITS:
        m = metrics["eval"][split]
        rows = [(split, m)]
        if recipe.env.kind == "coinrun" and m["informative"]["n"]:
            rows.append((f"{split}, informative (n={m['informative']['n']})", m["informative"]))
        for label, r in rows:
            cells = [f"{r['rates'][k]:.3f} [{r['ci95'][k][0]:.3f}, {r['ci95'][k][1]:.3f}]" for k in keys]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", RATE_NOTES[recipe.env.kind], ""]
    return "\n".join(lines)


def train_recipe(
    recipe_path: str | Path,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    total_steps: int | None = None,
) -> Path:
    """Train the organism a recipe describes and write its artifact folder (default `artifacts/agents/NAME`).
    `total_steps` overrides the recipe (smoke runs); checkpoints go to `runs/checkpoints/NAME` for `--resume`."""
    recipe = load_recipe(recipe_path)
    ppo = recipe.ppo if total_steps is None else PPOConfig(**{**asdict(recipe.ppo), "total_steps": total_steps})
    if ppo.batch_size % ppo.num_minibatches:
        raise WorkbenchError(f"{recipe.path} [ppo]: num_envs*num_steps must be divisible by num_minibatches")
    out = out or artifacts.artifacts_root() / "agents" / recipe.artifact.name
    ckpt = Path("runs") / "checkpoints" / recipe.artifact.name
    env_cfg = recipe.env.maze_config()
    torch.manual_seed(ppo.seed)
    policy = ImpalaPolicy(recipe.policy)

    def periodic_eval(p: torch.nn.Module) -> dict:
        n = min(ppo.eval_episodes, recipe.eval.episodes)
        return {s: evaluate(p, s, n, recipe.eval.seed + 1, env_cfg).rates()["rates"] for s in SPLITS}

    t0 = time.time()
    bc_history: list[dict] = []
    if recipe.bc.states > 0:
        if ppo.threads:
            torch.set_num_threads(ppo.threads)
        obs, actions = collect_expert_data(recipe.env.split, env_cfg, recipe.bc)
        bc_history = behaviour_clone(policy, obs, actions, recipe.bc, progress=progress)
        del obs, actions
        bc_eval = periodic_eval(policy)
        bc_history[-1]["eval"] = bc_eval
    vec_env = VEC_ENVS[recipe.env.kind]
    history = (
        train_ppo(
            lambda n: vec_env(n, recipe.env.split, env_cfg),
            policy,
            ppo,
            checkpoint_dir=ckpt,
            evaluate=periodic_eval,
            resume=resume,
            progress=progress,
        )
        if ppo.total_steps > 0
        else []  # total_steps = 0: behaviour cloning only (the card says so)
    )
    wall = time.time() - t0
    final = {s: evaluate(policy, s, recipe.eval.episodes, recipe.eval.seed, env_cfg).rates() for s in SPLITS}
    metrics = {
        "training": {
            "steps": history[-1]["steps"] if history else 0,
            "bc_states": recipe.bc.states,
            "bc": bc_history,
            "wall_time_s": wall,
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
            "final_episode_return": history[-1]["episode_return"] if history else None,
            "curve": [
                {k: h[k] for k in ("steps", "episode_return", "episode_length") if k in h}
                | ({"eval": h["eval"]} if "eval" in h else {})
                for h in history[:: max(1, len(history) // 50)]
            ],
        },
        "eval": {s: {"episodes": recipe.eval.episodes, "seed": recipe.eval.seed, **final[s]} for s in SPLITS},
    }
    config = {
        "kind": "rl-agent",
        "env": {"kind": recipe.env.kind, "split": recipe.env.split, **asdict(env_cfg)},
        "policy": recipe.policy.to_dict(),
        "ppo": asdict(ppo),
        "bc": asdict(recipe.bc),
        "recipe": recipe.raw,
        "recipe_path": recipe.path.as_posix(),
    }
    save_agent(out, policy, config, _card(recipe, metrics), metrics)
    return out
