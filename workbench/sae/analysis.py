"""What the latents are: densities, top-activating examples, goal alignment, and steering with latents.

Goal alignment: each SAE token is one spatial position of one observation, so "is the goal here?" is a per-token
label (the cheese's cell in the maze, the coin's cell of the egocentric view in CoinRun, mapped onto the layer's grid
by the kind's own `GoalCells` in its `features.py`: this module names no kind). A latent's
activation at a token is a score for that label, and its AUROC says how well the latent alone finds the cheese.
Latents are ranked on a fit set and the best is re-measured on a held-out set (no selection on the test set).
Baselines on the same tokens and labels: the spatial 1x1 logistic probe (`fit_spatial_probe`: a per-cell logit),
the difference of mean channel vectors (cheese cell minus other cells), and a control latent ranked against labels
shuffled across observations (what selection plus the cell prior alone give).

Steering: on the same OOD levels and action seed, the un-intervened policy against (a) subtracting the per-maze
cheese vector (Turner et al.), (b) clamping the cheese latent to 0 at every position with the SAE's error term kept
(`clamp_latent`), (c) ablating the latent's decoder direction, the probe direction and the diff-of-means direction
at every position (`ablate_direction`), and (d) ablating a random direction (`random_like`, the control). Reported:
cheese and corner_first rates (Wilson), P(cheese-ward action) at the decision square (bootstrap), and paired
differences vs the un-intervened run with bootstrap CIs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.interventions import ablate_direction, add_vector, clamp_latent, random_like
from workbench.metrics import auroc, bootstrap_ci, bootstrap_ci_paired, paired_diff_ci, rate
from workbench.probes import fit_spatial_probe
from workbench.sae.data import to_tokens
from workbench.sae.goal_cells import GoalCells, goal_cells_of


# ---------------------------------------------------------------------------------------------------- latent maps
@torch.no_grad()
def latent_acts(sae, acts: Tensor, layout: str = "position", batch: int = 4096) -> Tensor:
    """Latent activations for activation rows (N, ...): (N, d_sae, H, W) for conv rows in the position layout,
    (N, d_sae) otherwise. Encoded `batch` rows at a time."""
    out = []
    for start in range(0, acts.shape[0], batch):
        chunk = acts[start : start + batch]
        tokens, _ = to_tokens(chunk, layout)
        f = sae.encode(tokens.to(sae.dtype)).float()
        if layout == "position" and chunk.ndim == 4:
            b, _, h, w = chunk.shape
            f = f.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        out.append(f)
    return torch.cat(out)


def latent_stats(feats: Tensor, bins: int = 20) -> pd.DataFrame:
    """One row per latent: density (fraction of tokens where it fires), mean activation when firing, max, and a
    histogram of its non-zero activations (`hist`: counts over `bins` equal bins from 0 to its max)."""
    f = feats.transpose(0, 1).reshape(feats.shape[1], -1) if feats.ndim == 4 else feats.T
    rows = []
    for i in range(f.shape[0]):
        v = f[i]
        nz = v[v != 0]
        top = float(nz.max()) if nz.numel() else 0.0
        hist = torch.histc(nz, bins=bins, min=0.0, max=top).int().tolist() if nz.numel() else [0] * bins
        rows.append(
            {
                "latent": i,
                "density": float((v != 0).double().mean()),
                "mean_when_active": float(nz.mean()) if nz.numel() else 0.0,
                "max": top,
                "hist": hist,
            }
        )
    return pd.DataFrame(rows)


def top_activating(feats: Tensor, latent: int, n: int = 8) -> np.ndarray:
    """Row indices of the `n` examples where `latent` reaches its highest activation (over positions)."""
    if not 0 <= latent < feats.shape[1]:
        raise WorkbenchError(f"latent {latent} out of range for an SAE of width {feats.shape[1]}")
    peak = feats[:, latent].flatten(1).max(1).values if feats.ndim == 4 else feats[:, latent]
    return torch.argsort(peak, descending=True)[:n].numpy()


# ------------------------------------------------------------------------------------------------ goal alignment
def _best(scores: np.ndarray, y: np.ndarray) -> tuple[int, np.ndarray]:
    """AUROC of every column of `scores` (tokens, k) against y; returns (argmax, aurocs)."""
    a = np.array([auroc(y, scores[:, j]) for j in range(scores.shape[1])])
    return int(np.nanargmax(a)), a


def goal_alignment(
    sae,
    ds_fit,
    ds_test,
    hook: str,
    n_top: int = 5,
    seed: int = 0,
    n_boot: int = 500,
    kind: str | None = None,
    *,
    goal: GoalCells | None = None,
) -> dict:
    """Rank latents by AUROC for "the goal is at this position" on `ds_fit`, re-measure the best on `ds_test`, and
    compare with the spatial probe, the diff-of-means direction and a shuffled-label control latent on the same test
    tokens. Bootstrap CIs resample tokens (positions of the same observation are not independent, so they are narrow).

    Where the goal is comes from `goal` (a `GoalCells`: per-row layer-cell labels and their card text), or from the
    registered kind `kind`'s feature views (`FeatureViews.goal_cells`: the maze's cheese cell, CoinRun's coin in the
    egocentric view); without either, from the kind of the subject that collected `ds_fit` (its `source` record).
    """
    if goal is None:
        if kind is None:
            from workbench.subjects import kinds

            collected_by = (ds_fit.meta.get("source") or {}).get("kind")
            kind = collected_by if collected_by in kinds() else None
        if kind is None:
            raise WorkbenchError("goal_alignment needs where the goal is: pass kind='<subject kind>' or goal=GoalCells")
        goal = goal_cells_of(kind)
    cell_labels, label_text = goal.labels, goal.text
    a_fit, a_test = ds_fit[hook], ds_test[hook]
    if a_fit.ndim != 4:
        raise WorkbenchError(
            f"goal alignment by position needs a conv (C, H, W) hook; {hook} rows are {a_fit.shape[1:]}"
        )
    grid = tuple(a_fit.shape[2:])
    lab_fit = cell_labels(ds_fit, grid)
    y_fit, y_test = lab_fit.ravel(), cell_labels(ds_test, grid).ravel()
    f_fit = latent_acts(sae, a_fit).permute(0, 2, 3, 1).reshape(-1, sae.cfg.d_sae).numpy()
    f_test = latent_acts(sae, a_test).permute(0, 2, 3, 1).reshape(-1, sae.cfg.d_sae).numpy()
    best, fit_aurocs = _best(f_fit, y_fit)
    order = np.argsort(-np.nan_to_num(fit_aurocs, nan=0.0))[:n_top]

    def measured(score: np.ndarray) -> dict:
        return {"auroc": auroc(y_test, score), "ci95": list(bootstrap_ci_paired(y_test, score, auroc, n_boot, seed))}

    latents = [{"latent": int(i), "fit_auroc": float(fit_aurocs[i]), **measured(f_test[:, i])} for i in order]
    # spatial probe: a per-cell logit from one weight per channel
    has = lab_fit.any(1)  # rows with the goal on the grid (the probe picks one cell per row)
    if has.all():
        probe = fit_spatial_probe(a_fit, torch.as_tensor(lab_fit.argmax(1)))
    else:
        probe = fit_spatial_probe(a_fit[torch.as_tensor(has)], torch.as_tensor(lab_fit[has].argmax(1)))
    probe_score = probe.logits(a_test.double()).numpy().ravel()
    # difference of means: channel vector at the cheese cell minus at every other cell
    tok_fit = a_fit.permute(0, 2, 3, 1).reshape(-1, a_fit.shape[1]).double()
    tok_test = a_test.permute(0, 2, 3, 1).reshape(-1, a_test.shape[1]).double()
    yf = torch.as_tensor(y_fit)
    dm = tok_fit[yf].mean(0) - tok_fit[~yf].mean(0)
    dm_score = (tok_test @ dm).numpy()
    # control: the latent that best matches labels shuffled across observations
    rng = np.random.default_rng(seed)
    shuffled = lab_fit[rng.permutation(len(lab_fit))].ravel()
    ctrl, _ = _best(f_fit, shuffled)
    return {
        "hook": hook,
        "label": label_text,
        "tokens_fit": int(y_fit.size),
        "tokens_test": int(y_test.size),
        "positives_test": int(y_test.sum()),
        "best_latent": int(order[0]),
        "latents": latents,
        "probe": measured(probe_score),
        "diff_of_means": measured(dm_score),
        "control_latent": {"latent": ctrl, **measured(f_test[:, ctrl])},
        "directions": {
            "sae_decoder": sae.W_dec[int(order[0])].detach().float().clone(),
            "probe": probe.direction().float().clone(),
            "diff_of_means": dm.float().clone(),
        },
    }


# ----------------------------------------------------------------------------------------------------- steering
Conditions = dict[str, Callable[[np.ndarray], list]]


def _decision_square(agent, levels, conditions: Conditions, seed: int) -> dict:
    """P(cheese-ward action) at each level's decision square under each condition (hooks built for those levels)."""
    from workbench.hooks import run_with_hooks
    from workbench.policy import direction_probs, logits_of
    from workbench.rl.envs.maze import decision_squares, distances_to, greedy_actions

    ds = decision_squares(levels)
    valid = np.flatnonzero(ds[:, 0] >= 0)
    out: dict = {"n": int(valid.size)}
    if valid.size == 0:
        return out
    at = levels.select(valid).with_mouse(ds[valid])
    target = torch.as_tensor(greedy_actions(distances_to(at, at.cheese), at.mouse))
    obs = torch.as_tensor(at.observe())
    values = {}
    for name, make in conditions.items():
        with torch.no_grad():
            logits = logits_of(run_with_hooks(agent.policy, obs, fwd_hooks=make(valid)), valid.size).float().cpu()
        probs = direction_probs(logits, at.ACTION_GROUPS)
        values[name] = probs[torch.arange(valid.size), target].double().numpy()
    for name, p in values.items():
        out[name] = {"mean": float(p.mean()), "ci95": list(bootstrap_ci(p, seed=seed))}
        if name != "baseline":
            d = p - values["baseline"]
            out[name]["diff"] = {"mean": float(d.mean()), "ci95": list(bootstrap_ci(d, seed=seed))}
    return out


def steering_comparison(
    agent, sae, hook: str, latent: int, directions: dict[str, Tensor], episodes: int = 300, seed: int = 0
) -> dict:
    """Side-by-side steering on the same `episodes` OOD levels and action seed (see module docstring).

    `directions` maps a name to a (C,) channel direction to ablate at every position (e.g. the `goal_alignment`
    directions); a random direction of the decoder's norm is added as the control."""
    from workbench.rl.steering import cheese_vectors

    levels = agent.world.levels("ood", int(episodes), seed)
    cv = cheese_vectors(agent, levels, hook)
    rand = random_like(sae.W_dec[latent].detach().float(), seed=seed + 1)
    conditions: Conditions = {
        "baseline": lambda idx: [],
        "cheese vector subtracted": lambda idx: [(hook, add_vector(cv[idx], -1.0))],
        f"SAE latent {latent} clamped to 0": lambda idx: [(hook, clamp_latent(sae, latent, 0.0))],
    }
    for name, d in directions.items():
        conditions[f"{name} direction ablated"] = lambda idx, d=d: [(hook, ablate_direction(d))]
    conditions["random direction ablated (control)"] = lambda idx: [(hook, ablate_direction(rand))]
    all_idx = np.arange(len(levels))
    recs = {
        name: agent.world.run(agent.policy, levels, seed=seed, fwd_hooks=make(all_idx))
        for name, make in conditions.items()
    }
    rows = {}
    base = recs["baseline"].flags()
    for name, rec in recs.items():
        flags = rec.flags()
        row = {"cheese": rate(flags["cheese"]), "corner_first": rate(flags["corner_first"])}
        if name != "baseline":
            row["diff"] = {
                k: {kk: v for kk, v in paired_diff_ci(base[k], flags[k], seed=seed).items() if kk in ("diff", "ci95")}
                for k in ("cheese", "corner_first")
            }
        rows[name] = row
    return {
        "episodes": int(episodes),
        "seed": int(seed),
        "hook": hook,
        "latent": int(latent),
        "conditions": rows,
        "decision_square": _decision_square(agent, levels, conditions, seed),
    }


def steering_table(result: dict) -> str:
    """The steering comparison as a markdown table (rates with Wilson CIs, paired differences with bootstrap CIs)."""

    def ci(r: dict) -> str:
        return f"{r['rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"

    def dci(d: dict) -> str:
        return f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"

    dsq = result["decision_square"]
    lines = [
        f"| condition (n={result['episodes']} OOD mazes) | cheese | Δ cheese | corner_first | Δ corner_first | "
        f"P(cheese-ward) at decision square (n={dsq['n']}) | Δ P |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["conditions"].items():
        d = row.get("diff")
        p = dsq.get(name, {})
        pd_ = p.get("diff")
        lines.append(
            f"| {name} | {ci(row['cheese'])} | {dci(d['cheese']) if d else '-'} | {ci(row['corner_first'])} | "
            f"{dci(d['corner_first']) if d else '-'} | "
            + (f"{p['mean']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]" if p else "-")
            + " | "
            + (f"{pd_['mean']:+.3f} [{pd_['ci95'][0]:+.3f}, {pd_['ci95'][1]:+.3f}]" if pd_ else "-")
            + " |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ figures
def maze_levels_for_rows(ds, rows: np.ndarray):
    """The maze states of dataset rows (level seed, split, mouse cell), rebuilt from the labels."""
    from workbench.rl.envs.maze import MazeConfig, generate_levels

    env = {k: v for k, v in (ds.meta.get("source") or {}).get("env_config", {}).items()}
    cfg = MazeConfig(**env) if env else MazeConfig()
    lab = ds.labels.iloc[rows]
    split = str(lab["split"].iloc[0])
    levels = generate_levels(lab["level_seed"].to_numpy().astype(np.int64), split, cfg)
    return levels.with_mouse(np.stack([lab["mouse_row"].to_numpy(), lab["mouse_col"].to_numpy()], 1))


def draw_top_activating(ds, feats: Tensor, latent: int, n: int = 6, path=None, cell_px: int = 12):
    """Maze renders of the `n` top-activating rows with the latent's spatial heatmap overlaid (upsampled from the
    layer grid onto the world). Returns the matplotlib figure; saves a PNG when `path` is given."""
    import matplotlib.pyplot as plt

    from workbench.rl.envs.maze import render

    rows = top_activating(feats, latent, n)
    levels = maze_levels_for_rows(ds, rows)
    imgs = render(levels, cell_px=cell_px)
    world = levels.world_size
    fig, axes = plt.subplots(1, len(rows), figsize=(2.2 * len(rows), 2.5), squeeze=False)
    for j, r in enumerate(rows):
        ax = axes[0, j]
        ax.imshow(imgs[j])
        heat = feats[r, latent].numpy()
        grid = heat.shape[0]
        scale = int(np.ceil(world / grid))
        up = np.kron(heat, np.ones((scale, scale)))[:world, :world]
        ax.imshow(
            up, cmap="magma", alpha=0.55, extent=(0, world * cell_px, world * cell_px, 0), interpolation="nearest"
        )
        ax.set_title(f"row {int(r)}: max {heat.max():.2f}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"latent {latent}: top-activating observations", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return fig
