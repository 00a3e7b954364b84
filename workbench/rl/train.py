"""`workbench train RECIPE`: recipe -> PPO -> evaluated artifact folder with card and metrics.

The recipe is the whole truth about an organism: env distribution, policy shape, PPO hyperparameters, seeds.
The artifact records the recipe verbatim, so a card can always be traced back to the command that made it.

Validation first: `load_recipe` checks every section and number ([env], [policy], [bc], [ppo], [eval]) before any
data is collected, so a bad recipe costs nothing and each error names the file and the `[section].key`.

Resume (`runs/checkpoints/NAME/`): `recipe.json` records the hash of the recipe's training sections ([env],
[policy], [bc], [ppo], with the effective total_steps); `--resume` with a recipe whose training sections differ is
one line naming the differing keys ([artifact] and [eval] may change: they do not change the trained weights, and
the final evaluation always runs with the current recipe). Finished phases are not re-run: `bc/` holds the
behaviour-cloned weights and history, `ppo/` the last PPO checkpoint, which captures the optimiser, the sampling
generator and the episodes in flight, so resumed training is bit-identical to uninterrupted training (checked by
tests/test_trust_resume.py). Training without `--resume` clears the checkpoint folder first.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench import artifacts
from workbench.errors import WorkbenchError, unknown
from workbench.recipes import ArtifactSection, check_sections, from_table, read_toml, recipe_diff, recipe_hash
from workbench.rl.agent import save_agent
from workbench.rl.agent_checks import check_policy_config, check_state_dict
from workbench.rl.env_kinds import EnvKind, env_configs, env_kind
from workbench.rl.envs.maze import SPLITS
from workbench.rl.imitation import BCConfig, behaviour_clone, collect_expert_data
from workbench.rl.policies import ImpalaPolicy, PolicyConfig
from workbench.rl.ppo import PPOConfig, train_ppo
from workbench.rl.rollout import evaluate, rate_keys

PROCGEN_KINDS = ("procgen-maze",)
"""Recipe env kinds trained on real procgen pixels (`workbench.rl.procgen.train`; procgen is an optional extra)."""


def _recipe_env_configs() -> dict[str, type]:
    """Env kind -> config dataclass a recipe's [env] table builds (native kinds plus real procgen maze)."""
    from workbench.rl.envs.procgen import ProcgenConfig

    return {**env_configs(), "procgen-maze": ProcgenConfig}


@dataclass(frozen=True)
class EnvSection:
    """`[env]`: which env (`kind`: a native env kind of `workbench.rl.env_kinds`, or procgen-maze), which split it
    trains on, and the distribution (the keys of that kind's config class, or ProcgenConfig; procgen recipes train in
    `workbench.rl.procgen.train`)."""

    kind: str
    split: str
    config: Any

    @property
    def maze(self) -> Any:
        """The env config (named for the maze, the first env kind; kept for existing callers)."""
        return self.config

    def maze_config(self) -> Any:
        return self.config

    @property
    def native(self) -> EnvKind:
        """The native env kind (not for procgen kinds)."""
        return env_kind(self.kind)


def _env_section(table: dict, where: str) -> EnvSection:
    if not isinstance(table, dict):
        raise WorkbenchError(f"{where}: expected a table")
    table = dict(table)
    kind, split = table.pop("kind", "maze"), table.pop("split", "train")
    configs = _recipe_env_configs()
    if kind not in configs:
        raise WorkbenchError(f"{where}: {unknown('env kind', str(kind), list(configs))}")
    splits = SPLITS if kind in PROCGEN_KINDS else env_kind(kind).splits
    if split not in splits:
        raise WorkbenchError(f"{where}: {unknown('split', str(split), splits)}")
    if kind in PROCGEN_KINDS:
        if "game" in table:
            raise WorkbenchError(f"{where}: drop 'game': the env kind {kind!r} names it")
        table["game"] = kind.split("-", 1)[1]
    return EnvSection(kind=kind, split=split, config=from_table(configs[kind], table, where))


def _policy_defaults(env: EnvSection) -> dict:
    """Policy shape implied by the env: input channels, observation side, number of actions."""
    if env.kind in PROCGEN_KINDS:
        from workbench.rl.published import published_config

        return published_config(1).to_dict()  # the published IMPALA net at channel scale 1
    return env.native.policy_shape(env.config)


@dataclass(frozen=True)
class EvalSection:
    """`[eval]`: the final evaluation, `episodes` levels per split drawn with `seed`."""

    episodes: int = 1000
    seed: int = 20_231_001

    def __post_init__(self) -> None:
        from workbench.validate import check_episodes, check_seed

        check_episodes(self.episodes)
        check_seed(self.seed)


@dataclass(frozen=True)
class Recipe:
    path: Path
    artifact: ArtifactSection
    env: EnvSection
    policy: PolicyConfig
    ppo: PPOConfig
    bc: BCConfig = field(default_factory=BCConfig)  # ProcgenBCConfig for procgen kinds
    eval: EvalSection = field(default_factory=EvalSection)
    raw: dict = field(default_factory=dict)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate an agent recipe (see agents/*.toml); errors name the file, the section and the key."""
    path = Path(path)
    data = read_toml(path)
    check_sections(
        data, {"artifact": True, "env": True, "policy": False, "bc": False, "ppo": True, "eval": False}, str(path)
    )
    artifact = from_table(ArtifactSection, data["artifact"], f"{path} [artifact]")
    if not artifact.name or artifact.name.startswith(".") or "/" in artifact.name or "\\" in artifact.name:
        raise WorkbenchError(f"{path} [artifact]: name {artifact.name!r} must be a plain folder name, e.g. 'maze-x'")
    env = _env_section(data["env"], f"{path} [env]")
    policy_raw = data.get("policy", {})
    if not isinstance(policy_raw, dict):
        raise WorkbenchError(f"{path} [policy]: expected a table, got {type(policy_raw).__name__}")
    policy = from_table(PolicyConfig, {**_policy_defaults(env), **policy_raw}, f"{path} [policy]")
    check_policy_config(policy, f"{path} [policy]")
    if env.kind in PROCGEN_KINDS:
        from workbench.rl.procgen.train import ProcgenBCConfig, check_published_policy

        check_published_policy(policy, f"{path} [policy]")
        bc_cls: type = ProcgenBCConfig
    else:
        for key, want in env.native.policy_shape(env.config).items():
            if getattr(policy, key) != want:
                raise WorkbenchError(
                    f"{path} [policy]: {key} = {getattr(policy, key)} does not fit the {env.kind} env, "
                    f"which needs {want}"
                )
        bc_cls = BCConfig
    return Recipe(
        path=path,
        artifact=artifact,
        env=env,
        policy=policy,
        ppo=from_table(PPOConfig, data["ppo"], f"{path} [ppo]"),
        bc=from_table(bc_cls, data.get("bc", {}), f"{path} [bc]"),
        eval=from_table(EvalSection, data.get("eval", {}), f"{path} [eval]"),
        raw=data,
    )


def _training_phrase(training: dict, kind: str = "maze") -> str:
    ppo = f"PPO for {training['steps']:,} env steps" if training["steps"] else "no PPO fine-tune (BC only)"
    if not training["bc_states"]:
        return ppo
    expert = env_kind(kind).expert_phrase
    return f"behaviour cloning of {expert} on {training['bc_states']:,} states of the training split, then {ppo}"


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
        recipe.env.native.describe(recipe.env.config, recipe.env.split),
        "",
        f"## Evaluation ({recipe.eval.episodes} episodes per split, seed {recipe.eval.seed}, sampled actions)",
        "",
        "| split | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for split in recipe.env.native.splits:
        m = metrics["eval"][split]
        rows = [(split, m)]
        if recipe.env.native.informative_rows and m["informative"]["n"]:
            rows.append((f"{split}, informative (n={m['informative']['n']})", m["informative"]))
        for label, r in rows:
            cells = [f"{r['rates'][k]:.3f} [{r['ci95'][k][0]:.3f}, {r['ci95'][k][1]:.3f}]" for k in keys]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", recipe.env.native.rate_notes, ""]
    return "\n".join(lines)


TRAINING_SECTIONS = ("env", "policy", "bc", "ppo")
"""The recipe sections that determine the trained weights: a checkpoint records their hash."""
RECORD = "recipe.json"


def _training_tables(recipe: Recipe, ppo: PPOConfig) -> dict:
    """The training sections as trained: the recipe's tables with the policy defaults and total_steps applied."""
    tables = {k: recipe.raw.get(k, {}) for k in TRAINING_SECTIONS}
    tables["policy"] = recipe.policy.to_dict()
    tables["ppo"] = {**tables["ppo"], "total_steps": ppo.total_steps}
    return json.loads(json.dumps(tables))  # as recorded: tuples become lists


def _prepare_checkpoints(ckpt: Path, recipe: Recipe, ppo: PPOConfig, resume: bool) -> None:
    """Check a resume against the recipe the checkpoint was made with, or clear the folder for a fresh run; then
    record this recipe's training sections and hash."""
    tables = _training_tables(recipe, ppo)
    digest = recipe_hash(tables)
    record = ckpt / RECORD
    if resume and ckpt.is_dir():
        if record.is_file():
            try:
                old = json.loads(record.read_text())
                old_hash, old_tables = old["hash"], old["tables"]
            except (OSError, ValueError, KeyError, TypeError):
                raise WorkbenchError(f"{record}: unreadable checkpoint record; train without --resume") from None
            if old_hash != digest:
                diff = recipe_diff(old_tables, tables)
                shown = "; ".join(diff[:6]) + (f"; (+{len(diff) - 6} more)" if len(diff) > 6 else "")
                raise WorkbenchError(
                    f"{recipe.path}: cannot --resume {ckpt}: it was trained with a different recipe ({shown}); "
                    "restore those values or train without --resume"
                )
            return
        if (ckpt / "checkpoint.json").is_file() or (ckpt / "ppo").is_dir():
            raise WorkbenchError(
                f"{ckpt}: checkpoint has no recipe record (made by an older workbench), so it cannot be checked "
                "against the recipe; train without --resume"
            )
    elif ckpt.is_dir():  # a fresh run: a later --resume must never mix in another run's phases
        for name in ("bc", "ppo"):
            shutil.rmtree(ckpt / name, ignore_errors=True)
        for name in ("checkpoint.json", "checkpoint.safetensors", RECORD):
            (ckpt / name).unlink(missing_ok=True)
    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = ckpt / f".{RECORD}.tmp"
    tmp.write_text(json.dumps({"hash": digest, "tables": tables}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, record)


def _behaviour_cloning(recipe: Recipe, policy: ImpalaPolicy, bc_dir: Path, resume: bool, progress: bool, evaluate):
    """The BC phase, or its saved result when resuming (never re-run once finished)."""
    from safetensors.torch import load_file, save_file

    state = bc_dir / "state.json"
    if resume and state.is_file():
        weights = load_file(str(bc_dir / artifacts.WEIGHTS))
        check_state_dict(policy, weights, bc_dir)
        policy.load_state_dict(weights)
        return json.loads(state.read_text())["history"]
    obs, actions = collect_expert_data(recipe.env.split, recipe.env.config, recipe.bc)
    history = behaviour_clone(policy, obs, actions, recipe.bc, progress=progress)
    del obs, actions
    history[-1]["eval"] = evaluate(policy)
    with artifacts.writing(bc_dir) as tmp:
        save_file({k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(tmp / artifacts.WEIGHTS))
        (tmp / "state.json").write_text(json.dumps({"history": history}))
    return history


def train_recipe(
    recipe_path: str | Path,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    total_steps: int | None = None,
) -> Path:
    """Train the organism a recipe describes and write its artifact folder (default `artifacts/agents/NAME`).
    `total_steps` overrides the recipe (smoke runs); checkpoints go to `runs/checkpoints/NAME` for `--resume`
    (see the module docstring: the recipe is checked against the checkpoint, finished phases are kept)."""
    from workbench.validate import check_int, check_output_dir

    recipe = load_recipe(recipe_path)
    ppo = recipe.ppo
    if total_steps is not None:
        check_int("total steps (--steps)", total_steps, 0, 10**10)
        try:
            ppo = PPOConfig(**{**asdict(recipe.ppo), "total_steps": total_steps})
        except WorkbenchError as err:
            raise WorkbenchError(f"{recipe.path} [ppo] with --steps {total_steps}: {err}") from None
    out = Path(out) if out is not None else artifacts.output_artifacts_root() / "agents" / recipe.artifact.name
    if artifacts.is_installed_data(out):
        raise WorkbenchError(f"artifact folder {out} is inside the installed package; choose a folder of your own")
    check_output_dir(out, name="artifact folder")
    ckpt = Path("runs") / "checkpoints" / recipe.artifact.name
    check_output_dir(ckpt, name="checkpoint folder")
    _prepare_checkpoints(ckpt, recipe, ppo, resume)
    if recipe.env.kind in PROCGEN_KINDS:  # real procgen pixels: BC, PPO and evaluation live with the procgen kind
        from workbench.rl.procgen.train import train_procgen_recipe

        return train_procgen_recipe(recipe, ppo, out=out, ckpt=ckpt, resume=resume, progress=progress)
    env_cfg = recipe.env.maze_config()
    torch.manual_seed(ppo.seed)
    policy = ImpalaPolicy(recipe.policy)

    def periodic_eval(p: torch.nn.Module) -> dict:
        n = min(ppo.eval_episodes, recipe.eval.episodes)
        return {s: evaluate(p, s, n, recipe.eval.seed + 1, env_cfg).rates()["rates"] for s in recipe.env.native.splits}

    t0 = time.time()
    bc_history: list[dict] = []
    if recipe.bc.states > 0:
        if ppo.threads:
            torch.set_num_threads(ppo.threads)
        bc_history = _behaviour_cloning(recipe, policy, ckpt / "bc", resume, progress, periodic_eval)
    vec_env = recipe.env.native.vec_env
    splits = recipe.env.native.splits
    history = (
        train_ppo(
            lambda n: vec_env(n, recipe.env.split, env_cfg),
            policy,
            ppo,
            checkpoint_dir=ckpt / "ppo",
            evaluate=periodic_eval,
            resume=resume,
            progress=progress,
        )
        if ppo.total_steps > 0
        else []  # total_steps = 0: behaviour cloning only (the card says so)
    )
    wall = time.time() - t0
    final = {s: evaluate(policy, s, recipe.eval.episodes, recipe.eval.seed, env_cfg).rates() for s in splits}
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
        "eval": {s: {"episodes": recipe.eval.episodes, "seed": recipe.eval.seed, **final[s]} for s in splits},
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
