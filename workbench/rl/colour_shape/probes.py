"""Where are the goal-colour object and the goal-shape object? Spatial probes at a conv layer, and labelled collection.

Why both: on `ood` levels the goal colour and the goal shape sit on different objects, so a probe for each object's
cell asks whether a layer keeps both features' locations (a representation can hold the shape's position and still
steer by colour). Per layer and target: a 1x1 spatial probe (`workbench.probes.fit_spatial_probe`) fitted on start
states of `n_fit` `ood` levels, top-1 cell accuracy on `n_test` held-out levels (another seed stream; seeds seen in
fitting dropped) with a Wilson 95% interval, next to a control probe fitted on shuffled labels (what the cell prior
alone gives) and chance (1 / cells the label takes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError, unknown
from workbench.probes import fit_spatial_probe, layer_cell_index, top1_accuracy
from workbench.rl.agent import Agent
from workbench.rl.colour_shape.env import COLOURS, SHAPES, ColourShapeLevels
from workbench.rl.steering import activations_at, check_layer
from workbench.rl.verbs import VerbResult
from workbench.rl.world import check_split

TARGETS = ("colour_cell", "shape_cell")
"""`colour_cell`: the cell of the object with the goal colour; `shape_cell`: of the object with the goal shape."""
DEFAULT_LAYERS = ("embedder.block1.res2.resadd_out", "embedder.block2.res2.resadd_out")
TEST_SEED_OFFSET = 7_777_777


def cell_labels(levels: ColourShapeLevels, target: str, grid: int) -> torch.Tensor:
    """(N,) flat cell index on a grid x grid layer of the `target` object (see TARGETS)."""
    if target not in TARGETS:
        raise unknown("probe target", target, TARGETS)
    cell = levels.cue_cell(target.removesuffix("_cell"))
    if (cell[:, 0] < 0).any():
        raise WorkbenchError(f"{target}: some levels have no such object; probe on `ood` levels")
    w = levels.world_size
    return torch.as_tensor(layer_cell_index(cell[:, 0] * w + cell[:, 1], w, grid))


def location_probes(
    agent: Agent, layers: list[str] | tuple[str, ...] = DEFAULT_LAYERS, n_fit: int = 1000, n_test: int = 500,
    seed: int = 0,
) -> list[dict]:  # fmt: skip
    """One row per (layer, target): top-1 accuracy, Wilson CI, shuffled-label control, chance, selectivity."""
    for layer in layers:
        check_layer(agent, layer)
    if n_fit < 10 or n_test < 1:
        raise WorkbenchError(f"need n_fit >= 10 and n_test >= 1, got {n_fit}, {n_test}")
    fit = agent.world.levels("ood", n_fit, seed)
    test = agent.world.levels("ood", n_test, seed + TEST_SEED_OFFSET)
    seen = set(fit.seeds.tolist())
    test = test.select(np.array([s not in seen for s in test.seeds.tolist()]))
    rng = np.random.default_rng(seed)
    rows = []
    for layer in layers:
        acts, test_acts = activations_at(agent, fit, layer), activations_at(agent, test, layer)
        if acts.ndim != 4:
            raise WorkbenchError(f"{layer} is not a spatial (C, H, W) layer; choose a conv layer (see `hooks`)")
        grid = acts.shape[-1]
        for target in TARGETS:
            y, y_test = cell_labels(fit, target, grid), cell_labels(test, target, grid)
            probe = fit_spatial_probe(acts, y)
            control = fit_spatial_probe(acts, y[torch.as_tensor(rng.permutation(len(y)))])
            acc, ctrl = top1_accuracy(probe, test_acts, y_test), top1_accuracy(control, test_acts, y_test)
            rows.append(
                {
                    "layer": layer,
                    "target": target,
                    "metric": "top1",
                    "value": acc["rate"],
                    "ci95": acc["ci95"],
                    "n": acc["n"],
                    "shuffled_control": ctrl["rate"],
                    "control_ci95": ctrl["ci95"],
                    "selectivity": acc["rate"] - ctrl["rate"],
                    "chance": 1.0 / max(1, int(np.unique(y.numpy()).size)),
                    "grid": f"{grid}x{grid}",
                    "test_split": "ood",
                }
            )
    return rows


def probe_verb(
    agent: Agent,
    *,
    layers: list[str] | None = None,
    fit_split: str = "ood",
    n_fit: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    **_: Any,
) -> VerbResult:
    """Goal-colour and goal-shape object locations per layer. `data` holds `rows` and, per target, the first
    layer's numbers flat: `colour_cell.top1`, `.ci95`, `.control_top1`, `.selectivity`, `.chance`, `.n`."""
    if fit_split != "ood":
        raise WorkbenchError("colour-shape location probes fit on ood levels (the two objects apart); drop --fit-split")
    names = list(layers or DEFAULT_LAYERS)
    rows = location_probes(agent, names, n_fit or 1000, n_test or 500, seed)
    data: dict = {"artifact": agent.name, "subject_kind": agent.kind, "layer": names[0], "rows": rows}
    for r in rows:
        if r["layer"] == names[0]:
            data[r["target"]] = {
                "top1": r["value"], "ci95": r["ci95"], "control_top1": r["shuffled_control"],
                "selectivity": r["selectivity"], "chance": r["chance"], "n": r["n"],
            }  # fmt: skip
    lines = [f"{'layer':>34} {'target':>12} {'top1 [95% CI]':>22} {'shuffled':>9} {'chance':>7} {'n':>5}"]
    for r in rows:
        ci = f"{r['value']:.3f} [{r['ci95'][0]:.3f},{r['ci95'][1]:.3f}]"
        lines.append(
            f"{r['layer']:>34} {r['target']:>12} {ci:>22} {r['shuffled_control']:>9.3f} {r['chance']:>7.3f} {r['n']:>5}"
        )
    return VerbResult(data, "\n".join(lines))


# -------------------------------------------------------------------------------------------------------- collect
LABEL_COLUMNS = (
    "level_seed", "episode", "step", "split", "agent_row", "agent_col", "colour_row", "colour_col", "shape_row",
    "shape_col", "informative", "outcome_colour_first", "outcome_shape_first", "outcome_timeout",
)  # fmt: skip


def collect_verb(
    agent: Agent,
    *,
    hooks: list[str],
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    states: str = "start",
    out: Path | None = None,
    max_states_per_episode: int | None = None,
    **_: Any,
) -> VerbResult:
    """Labelled activations at `hooks`: one row per level (`start`) or per step of one sampled episode per level
    (`rollout`, at most `max_states_per_episode` per level). Labels: LABEL_COLUMNS (cells of the goal-colour and
    goal-shape objects, -1 where absent; the episode's outcome)."""
    from workbench.data.dataset import _check_hooks, _open_writer
    from workbench.hooks import hooks as hooked
    from workbench.rl.verbs import _collected

    hooks = _check_hooks(agent.policy, hooks)
    check_split(agent.world, split)
    if states not in ("start", "rollout"):
        raise unknown("states", states, ["start", "rollout"])
    if int(episodes) < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    cap = agent.env_config.max_steps if max_states_per_episode is None else int(max_states_per_episode)
    if cap < 1:
        raise WorkbenchError(f"max_states_per_episode must be >= 1, got {max_states_per_episode}")
    levels = agent.world.levels(split, episodes, seed)
    colour, shape = levels.cue_cell("colour"), levels.cue_cell("shape")
    source = {
        "kind": "colour-shape-agent",
        "description": f"{states} states of agent {agent.name!r} on {episodes} {split} levels (seed {seed})",
        "agent": agent.name, "split": split, "states": states, "episodes": int(episodes),
    }  # fmt: skip
    captured: dict[str, torch.Tensor] = {}

    def grab(name: str):
        def fn(act, hook):
            captured[name] = act.detach().clone()

        return fn

    def rows(idx: np.ndarray, t: int, agent_cells: np.ndarray) -> dict:
        return {
            "level_seed": levels.seeds[idx], "episode": idx, "step": np.full(idx.size, t), "split": [split] * idx.size,
            "agent_row": agent_cells[:, 0], "agent_col": agent_cells[:, 1], "colour_row": colour[idx, 0],
            "colour_col": colour[idx, 1], "shape_row": shape[idx, 0], "shape_col": shape[idx, 1],
            "informative": levels.informative()[idx],
        }  # fmt: skip

    writer = _open_writer(out, hooks, 4096, source, seed)
    with writer:
        recorded: list[np.ndarray] = []
        if states == "start":
            with torch.no_grad(), hooked(agent.policy, [(h, grab(h)) for h in hooks]):
                agent.policy(torch.as_tensor(levels.observe()))
            idx = np.arange(len(levels))
            writer.add({h: captured[h] for h in hooks}, rows(idx, 0, levels.agent))
            recorded.append(idx)
            records = agent.world.run(agent.policy, levels, seed=seed)
        else:
            from workbench.rl.colour_shape.env import ColourShapeVecEnv
            from workbench.rl.colour_shape.rollout import ColourShapeTracker
            from workbench.rl.loop import play_until_done

            env = ColourShapeVecEnv(len(levels), "ood", agent.env_config)
            obs, _ = env.reset(options={"levels": levels})
            tracker = ColourShapeTracker(levels)

            def on_step(t: int, obs_t: np.ndarray, _logits) -> None:
                if t >= cap:
                    return
                idx = np.flatnonzero(~tracker.done)
                if idx.size:
                    cells = np.argwhere(obs_t[idx, 1] == 1)[:, 1:]
                    writer.add({h: captured[h][idx] for h in hooks}, rows(idx, t, cells))
                    recorded.append(idx)

            records = play_until_done(
                agent.policy, env, obs, tracker, agent.env_config.max_steps, seed,
                [(h, grab(h)) for h in hooks], False, on_step,
            )  # fmt: skip
        flags = records.flags()
        ep = np.concatenate(recorded)
        ds = writer.close(
            {
                "outcome_colour_first": flags["colour_first"][ep],
                "outcome_shape_first": flags["shape_first"][ep],
                "outcome_timeout": flags["timeout"][ep],
            }
        )
    return _collected(agent, ds, out)


__all__ = ["COLOURS", "SHAPES", "TARGETS", "collect_verb", "location_probes", "probe_verb"]
