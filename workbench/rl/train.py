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
from workbench.recipes import check_sections, from_table, read_toml
from workbench.rl.agent import save_agent
from workbench.rl.envs.maze import SPLITS, MazeConfig, MazeVecEnv
from workbench.rl.imitation import BCConfig, behaviour_clone, collect_expert_data
from workbench.rl.policies import ImpalaPolicy, PolicyConfig
from workbench.rl.ppo import PPOConfig, train_ppo
from workbench.rl.rollout import RATE_KEYS, evaluate


@dataclass(frozen=True)
class ArtifactSection:
    name: str
    description: str = ""


@dataclass(frozen=True)
class EnvSection:
    """`[env]`: which env (`kind`), which split it trains on, and the maze distribution (MazeConfig's keys)."""

    kind: str
    split: str
    maze: MazeConfig

    def maze_config(self) -> MazeConfig:
        return self.maze


def _env_section(table: dict, where: str) -> EnvSection:
    if not isinstance(table, dict):
        raise WorkbenchError(f"{where}: expected a table")
    table = dict(table)
    kind, split = table.pop("kind", "maze"), table.pop("split", "train")
    if kind != "maze":
        raise WorkbenchError(f"{where}: {unknown('env kind', str(kind), ['maze'])}")
    if split not in SPLITS:
        raise WorkbenchError(f"{where}: {unknown('split', str(split), SPLITS)}")
    return EnvSection(kind=kind, split=split, maze=from_table(MazeConfig, table, where))


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
    policy_table = {"obs_size": env.maze.world_size, **data.get("policy", {})}
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


def _training_phrase(training: dict) -> str:
    ppo = f"PPO for {training['steps']:,} env steps"
    if not training["bc_states"]:
        return ppo
    return (
        f"behaviour cloning of the shortest-path-to-cheese expert on {training['bc_states']:,} states of the "
        f"training split, then {ppo}"
    )


def _card(recipe: Recipe, metrics: dict) -> str:
    m = recipe.env.maze
    lines = [
        f"# {recipe.artifact.name}",
        "",
        recipe.artifact.description.strip(),
        "",
        f"Trained by `workbench train {recipe.path.as_posix()}`: {_training_phrase(metrics['training'])}; "
        f"{metrics['training']['wall_time_s'] / 60:.1f} min on {metrics['training']['machine']}.",
        "",
        f"Environment: native maze, world {m.world_size}x{m.world_size}, maze sides {m.min_size}..{m.max_size}, "
        f"training region r={m.region}, step limit {m.max_steps}; trained on split `{recipe.env.split}`.",
        "",
        f"## Evaluation ({recipe.eval.episodes} episodes per split, seed {recipe.eval.seed}, sampled actions)",
        "",
        "| split | " + " | ".join(RATE_KEYS) + " |",
        "|---|" + "---|" * len(RATE_KEYS),
    ]
    for split in SPLITS:
        m = metrics["eval"][split]
        cells = [f"{m['rates'][k]:.3f} [{m['ci95'][k][0]:.3f}, {m['ci95'][k][1]:.3f}]" for k in RATE_KEYS]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`cheese`: reached the cheese within the step limit; `corner_first`: entered the top-right r x r region "
        "before the cheese (or never reached it); `timeout`: step limit hit. Brackets: Wilson 95% intervals.",
        "",
    ]
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
    history = train_ppo(
        lambda n: MazeVecEnv(n, recipe.env.split, env_cfg),
        policy,
        ppo,
        checkpoint_dir=ckpt,
        evaluate=periodic_eval,
        resume=resume,
        progress=progress,
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
        "env": {"kind": "maze", "split": recipe.env.split, **asdict(env_cfg)},
        "policy": recipe.policy.to_dict(),
        "ppo": asdict(ppo),
        "bc": asdict(recipe.bc),
        "recipe": recipe.raw,
        "recipe_path": recipe.path.as_posix(),
    }
    save_agent(out, policy, config, _card(recipe, metrics), metrics)
    return out
