"""Procgen vector field side by side: ours (`vector_field` on a `ProcgenMazeLevels` level) vs procgen-tools' method.

What is compared: the policy's action distribution with the mouse on every free cell of one real procgen maze (hard
mode, 25x25 world), on a 13x13 maze (level seed 0) and a 23x23 maze (level seed 12), with a random-weight
published-format policy (`ImpalaPolicy(published_config())`), torch on one thread.

- ours: `workbench.rl.vector_field.vector_field(policy, level)`; the level's `observe()` writes the K mouse cells
  into the level's procgen state bytes and draws the K frames through one reused procgen env (set_state re-renders in
  procgen 0.10.7), then one batched forward.
- peer: procgen-tools' `visualization.vector_field(venv, policy)` (UlisseMini/procgen-tools, reimplemented here
  step by step, not imported: it targets a procgen fork and pulls in notebooks' dependencies). `copy_venv` (a new
  1-env venv holding the level), `venv_with_all_mouse_positions` (per free cell: parse the state bytes into a dict of
  values through an LRU cache that returns a deep copy, set the mouse, serialise the whole dict; then a new venv of K
  envs and `set_state` of the K states), `vector_field_tup` (observe, transpose, /255, one batched forward, softmax,
  per-cell dicts of direction probabilities). One difference: procgen-tools gives the K-env venv `os.cpu_count()`
  procgen threads when K >= 100; here it gets one, like ours, so that both sides run on one core.

What bounds the ratio (the profile, printed by run.py and kept in --json): ours is one forward pass plus ~0.3 ms per
cell of procgen set_state; procgen-tools' method adds, per cell, a deep copy of the parsed state, a full serialise
and a newly generated procgen game (its K-game venv, with 512x512 human frames, then freed). Ours is then >= 90% the
forward pass. And the forward is not the same work on both sides: `vector_field` feeds the policy the C-contiguous
NCHW batch that `observe()` returns, while procgen-tools' transposed numpy frames reach torch in channels-last
layout, in which torch's CPU (oneDNN) convolutions run this policy 2-3x faster. The ratio therefore stays near 4x
until `vector_field` runs its forward in channels-last (and in chunks of 64 frames, which helps K = 286); the
profile's `projected_ratio_channels_last_chunks` is what that change gives, `ceiling_ratio_same_forward` the most
any method with procgen-tools' forward could reach.

Both sides are checked to give the same direction probabilities on the same cells (max |dp| < 1e-5) before timing.
Timing: interleaved rounds (ours, peer, ours, ...), median per side, ratio peer / ours, target >= 10x. The profile
(details of each row) splits both sides into state edits, rendering and the forward pass, each timed on its own, so
the reader can see which part bounds the ratio: the forward pass over K frames is the same work on both sides.

Usage (needs the procgen extra): python benchmarks/bench_procgen_field.py [--quick]
"""

from __future__ import annotations

import copy
import statistics
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import wraps

import numpy as np
import torch
import torch.nn.functional as F

LEVEL_SEEDS = {13: 0, 23: 12}  # procgen hard-mode level seeds whose maze_dim is 13 and 23 (checked when run)
TARGET = 10.0
PROBS_ATOL = 1e-5
WORLD_DIM = 25
EMPTY, BLOCKED, MOUSE = 100, 51, 25  # procgen-tools' grid values (MOUSE is theirs: not a procgen tile)
DIRECTIONS = ("UP", "DOWN", "LEFT", "RIGHT")  # our VectorField's order
ACTION_INDICES = {"LEFT": [0, 1, 2], "DOWN": [3], "UP": [5], "RIGHT": [6, 7, 8], "NOOP": [4, 9, 10, 11, 12, 13, 14]}
ACTION_DELTAS = {"LEFT": (0, -1), "RIGHT": (0, 1), "UP": (1, 0), "DOWN": (-1, 0), "NOOP": (0, 0)}


# ------------------------------------------------------------------------------ procgen-tools' method, reimplemented
@dataclass
class StateValue:
    """One parsed value and the byte offset after it (procgen-tools' `StateValue`)."""

    val: object
    idx: int


def _state_template() -> list:
    """procgen-tools' MAZE_STATE_DICT_TEMPLATE for procgen 0.10.7's layout: (type, name) rows, loops for the entities
    and the grid. Built from our own field tables (the layouts are the same)."""
    from workbench.rl.procgen_state import _BODY, _ENTITY_FIELDS, _HEAD, _TAILS

    kinds = {"i": "int", "f": "float", "s": "string", "<f4": "float", "<i4": "int"}

    def rows(fields):
        out = []
        for name, kind in fields:
            if kind == "r":  # an RNG state: is_seeded, then its text
                out += [["int", f"{name}.is_seeded"], ["string", f"{name}.str"]]
            else:
                out.append([kinds[kind], name])
        return out

    return (
        rows(_HEAD)
        + [["int", "ents.size"], ["loop", "ents", "ents.size", rows(_ENTITY_FIELDS)]]
        + rows(_BODY)
        + [["int", "w"], ["int", "h"], ["int", "data.size"], ["loop", "data", "data.size", [["int", "i"]]]]
        + rows(_TAILS["maze"])
        + [["int", "END_OF_BUFFER"]]
    )


TEMPLATE = _state_template()


def lru_cache(maxsize: int):
    """procgen-tools' LRU cache: returns a deep copy of the cached value on every call."""

    def decorator(func):
        cache: OrderedDict = OrderedDict()

        @wraps(func)
        def wrapper(*args, **kwargs):
            key = (args, tuple(kwargs.items()))
            try:
                value = cache.pop(key)
            except KeyError:
                value = func(*args, **kwargs)
            cache[key] = value
            if len(cache) > maxsize:
                cache.popitem(last=False)
            return copy.deepcopy(value)

        return wrapper

    return decorator


@lru_cache(maxsize=128)
def parse_state_bytes(state_bytes: bytes) -> dict:
    """procgen-tools' `_parse_maze_state_bytes`: every value into a (nested) dict of StateValue."""

    def read_fixed(idx, fmt):
        sz = struct.calcsize(fmt)
        return struct.unpack(fmt, state_bytes[idx : idx + sz])[0], idx + sz

    def read_string(idx):
        sz, idx = read_fixed(idx, "@i")
        return state_bytes[idx : idx + sz].decode("ascii"), idx + sz

    def parse_value(vals, val_def, idx):
        typ, name = val_def[0], val_def[1]
        if typ == "int":
            val, idx = read_fixed(idx, "@i")
            vals[name] = StateValue(val, idx)
        elif typ == "float":
            val, idx = read_fixed(idx, "@f")
            vals[name] = StateValue(val, idx)
        elif typ == "string":
            val, idx = read_string(idx)
            vals[name] = StateValue(val, idx)
        elif typ == "loop":
            vals[name] = []
            for _ in range(vals[val_def[2]].val):
                this: dict = {}
                for loop_def in val_def[3]:
                    idx = parse_value(this, loop_def, idx)
                vals[name].append(this)
        return idx

    vals: dict = {}
    idx = 0
    for val_def in TEMPLATE:
        idx = parse_value(vals, val_def, idx)
    return vals


def serialize_state(state_vals: dict) -> bytes:
    """procgen-tools' `_serialize_maze_state`: flatten the nested values, pack each one."""

    def serialize_val(val):
        if isinstance(val, StateValue):
            val = val.val
        if isinstance(val, int):
            return struct.pack("@i", val)
        if isinstance(val, float):
            return struct.pack("@f", val)
        if isinstance(val, str):
            return serialize_val(len(val)) + val.encode("ascii")
        raise ValueError(f"type(val)={type(val)} not handled")

    def flatten_vals(vals, flat_list):
        if isinstance(vals, dict):
            for val in vals.values():
                flatten_vals(val, flat_list)
        elif isinstance(vals, list):
            for val in vals:
                flatten_vals(val, flat_list)
        else:
            flat_list.append(vals)

    flat: list = []
    flatten_vals(state_vals, flat)
    return b"".join(serialize_val(v) for v in flat)


class EnvState:
    """procgen-tools' `EnvState`: state bytes, parsed on every access."""

    def __init__(self, state_bytes: bytes) -> None:
        self.state_bytes = state_bytes

    @property
    def state_vals(self) -> dict:
        return parse_state_bytes(self.state_bytes)

    @property
    def world_dim(self) -> int:
        return self.state_vals["world_dim"].val

    @property
    def mouse_pos(self) -> tuple[int, int]:
        ents = self.state_vals["ents"][0]
        return int(ents["y"].val), int(ents["x"].val)

    def full_grid(self, with_mouse: bool = True) -> np.ndarray:
        world_dim = self.world_dim
        grid = np.array([dd["i"].val for dd in self.state_vals["data"]]).reshape(world_dim, world_dim)
        if with_mouse:
            grid[self.mouse_pos] = MOUSE
        return grid

    def inner_grid(self, with_mouse: bool = True) -> np.ndarray:
        return inner_grid(self.full_grid(with_mouse=with_mouse))

    def set_mouse_pos(self, x: int, y: int) -> None:
        """Outer-grid coordinates: parse, set the first entity's x/y, serialise everything."""
        state_vals = self.state_vals
        state_vals["ents"][0]["x"].val = float(y) + 0.5
        state_vals["ents"][0]["y"].val = float(x) + 0.5
        self.state_bytes = serialize_state(state_vals)


def inner_grid(grid: np.ndarray) -> np.ndarray:
    """procgen-tools' `inner_grid`: strip the all-BLOCKED border rings."""
    bl = 0
    while (
        (grid[bl, :] == BLOCKED).all()
        and (grid[-bl - 1, :] == BLOCKED).all()
        and (grid[:, bl] == BLOCKED).all()
        and (grid[:, -bl - 1] == BLOCKED).all()
    ):
        bl += 1
    return grid[bl:-bl, bl:-bl] if bl > 0 else grid


def get_legal_mouse_positions(grid: np.ndarray) -> list[tuple[int, int]]:
    return [(x, y) for x in range(grid.shape[0]) for y in range(grid.shape[1]) if grid[x, y] == EMPTY]


def create_venv(num: int, start_level: int, num_levels: int, num_threads: int = 1):
    """procgen-tools' `create_venv` (the gym3 env; their wrappers only transpose and scale, done in `observe_venv`)."""
    from procgen import ProcgenGym3Env

    return ProcgenGym3Env(
        num=num,
        env_name="maze",
        num_levels=num_levels,
        start_level=start_level,
        distribution_mode="hard",
        num_threads=num_threads,
        render_mode="rgb_array",
    )


def observe_venv(venv) -> np.ndarray:
    """Their wrapped `venv.reset()`: ToBaselinesVecEnv observes, VecExtractDictObs, TransposeFrame, ScaledFloatFrame."""
    _, ob, _ = venv.observe()
    return ob["rgb"].transpose(0, 3, 1, 2) / 255.0


def copy_venv(venv, idx: int):
    sb = venv.callmethod("get_state")[idx]
    env = create_venv(num=1, start_level=0, num_levels=1)
    env.callmethod("set_state", [sb])
    return env


def venv_with_all_mouse_positions(venv):
    sb_back = venv.callmethod("get_state")[0]
    env_state = EnvState(sb_back)
    grid = env_state.inner_grid(with_mouse=False)
    legal_mouse_positions = get_legal_mouse_positions(grid)
    padding = (WORLD_DIM - grid.shape[0]) // 2
    state_bytes_list = []
    for mx, my in legal_mouse_positions:
        env_state.set_mouse_pos(mx + padding, my + padding)
        state_bytes_list.append(env_state.state_bytes)
        env_state.state_bytes = sb_back
    venv_all = create_venv(num=len(legal_mouse_positions), num_threads=1, num_levels=1, start_level=1)
    venv_all.callmethod("set_state", state_bytes_list)
    return venv_all, (legal_mouse_positions, grid)


def get_arrows_and_probs(legal_mouse_positions, c_probs: torch.Tensor):
    action_arrows, probs = [], []
    for i in range(len(legal_mouse_positions)):
        probs_dict = {name: c_probs[i][..., np.array(idx)].sum(-1) for name, idx in ACTION_INDICES.items()}
        probs_dict = {k: v.item() for k, v in probs_dict.items()}
        action_arrows.append([tuple(p * d for d in ACTION_DELTAS[act]) for act, p in probs_dict.items()])
        probs.append(tuple(probs_dict.values()))
    return action_arrows, probs


def categorical_policy(policy):
    """Their `CategoricalPolicy.forward` on our policy's weights: observations in [0, 1] (so no input scaling),
    log-softmax logits, a Categorical."""
    from workbench.rl.policies import ImpalaPolicy

    twin = ImpalaPolicy(replace(policy.cfg, input_scale=1.0)).eval()
    twin.load_state_dict(policy.state_dict())

    def forward(x: torch.Tensor):
        logits, value = twin(x)
        return torch.distributions.Categorical(logits=F.log_softmax(logits, dim=1)), value

    return forward


def procgen_tools_vector_field(venv, policy, idx: int = 0) -> dict:
    """procgen-tools' `vector_field(venv, policy, idx)` (with `vector_field_tup`)."""
    venv_idx = copy_venv(venv, idx)
    venv_all, (legal_mouse_positions, grid) = venv_with_all_mouse_positions(venv_idx)
    batched_obs = torch.tensor(observe_venv(venv_all), dtype=torch.float32)
    del venv_all
    with torch.no_grad():
        categorical, _ = policy(batched_obs)
    action_arrows, probs = get_arrows_and_probs(legal_mouse_positions, categorical.probs)
    return {"arrows": action_arrows, "legal_mouse_positions": legal_mouse_positions, "grid": grid, "probs": probs}


def reference_as_ours(vf: dict) -> tuple[np.ndarray, np.ndarray]:
    """(cells (K, 2) (row, col) from the top, probs (K, 4) up, down, left, right), sorted like `free_cells`."""
    padding = (WORLD_DIM - vf["grid"].shape[0]) // 2
    pos = np.array(vf["legal_mouse_positions"]) + padding  # (y from the bottom, x) in the world
    cells = np.stack([WORLD_DIM - 1 - pos[:, 0], pos[:, 1]], axis=1)
    names = list(ACTION_INDICES)
    probs = np.array(vf["probs"])[:, [names.index(d) for d in DIRECTIONS]]
    order = np.lexsort((cells[:, 1], cells[:, 0]))
    return cells[order], probs[order]


# ------------------------------------------------------------------------------------------------------- the levels
def field_level(maze_dim: int):
    """(venv, level): procgen-tools' 1-env venv of the hard-mode level seed whose maze is maze_dim x maze_dim, and
    the same level as our `ProcgenMazeLevels`."""
    from workbench.rl.procgen.levels import ProcgenMazeLevels
    from workbench.rl.procgen_state import parse

    seed = LEVEL_SEEDS[maze_dim]
    venv = create_venv(num=1, start_level=seed, num_levels=1)
    state = parse(venv.callmethod("get_state")[0])
    if state.tail["maze_dim"] != maze_dim:
        raise RuntimeError(f"level seed {seed} is a {state.tail['maze_dim']}x{state.tail['maze_dim']} maze here")
    return venv, ProcgenMazeLevels.from_states([state], region=5, mode="hard")


def check_same(policy, peer_policy, venv, level) -> float:
    """Both methods on the same maze: the same cells and the same direction probabilities (max |dp| < 1e-5)."""
    from workbench.rl.vector_field import vector_field

    ours = vector_field(policy, level)
    cells, probs = reference_as_ours(procgen_tools_vector_field(venv, peer_policy))
    if not np.array_equal(cells, ours.cells):
        raise AssertionError("procgen vector field: ours and procgen-tools' method disagree on the free cells")
    diff = float(np.abs(probs - ours.probs).max())
    if diff >= PROBS_ATOL:
        raise AssertionError(f"procgen vector field: ours and procgen-tools' method disagree, max |dp| = {diff:.2e}")
    return diff


# ---------------------------------------------------------------------------------------------------------- timing
def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved(cases, rounds: int) -> list[list[float]]:
    for case in cases:  # warm-up: our render env is created once per process, imports, allocator
        case()
    out: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for case, times in zip(cases, out, strict=True):
            start = time.perf_counter()
            case()
            times.append(time.perf_counter() - start)
    return out


def profile_ours(policy, level, reps: int) -> dict[str, float]:
    """Seconds per part of `vector_field(policy, level)`, each part timed on its own (median of reps). The forward
    over the K frames is timed three ways: on the C-contiguous NCHW batch `observe()` returns (what vector_field
    feeds the policy today), in channels-last memory format (what procgen-tools' transposed numpy frames give torch),
    and channels-last in chunks of 64 frames."""
    from workbench.policy import direction_probs, policy_logits
    from workbench.rl.procgen.levels import render_maze_blobs

    cells = level.free_cells(0)
    batch = level.select(np.zeros(len(cells), dtype=np.int64)).with_mouse(cells)
    blobs = batch.state_blobs()
    x = torch.as_tensor(render_maze_blobs(blobs, level.mode))
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def forward(obs, chunk=None):
        with torch.no_grad():
            parts = [obs] if chunk is None else [obs[lo : lo + chunk] for lo in range(0, len(obs), chunk)]
            logits = torch.cat([policy_logits(policy, p) for p in parts])
            return direction_probs(logits, level.ACTION_GROUPS).double().numpy()

    return {
        "cells_and_batch_arrays": _median_time(
            lambda: level.select(np.zeros(len(level.free_cells(0)), dtype=np.int64)).with_mouse(cells), reps
        ),
        "state_edits_bytes": _median_time(batch.state_blobs, reps),
        "render_set_state_observe": _median_time(lambda: render_maze_blobs(blobs, level.mode), reps),
        "forward_contiguous_nchw": _median_time(lambda: forward(x), reps),
        "forward_channels_last": _median_time(lambda: forward(x_cl), reps),
        "forward_channels_last_chunks_64": _median_time(lambda: forward(x_cl, 64), reps),
    }


def profile_peer(peer_policy, venv, reps: int) -> dict[str, float]:
    """Seconds per part of procgen-tools' method, each part timed on its own (median of reps). A new procgen venv
    generates its levels when created and is only ready at its first observe(), so creating, loading and the first
    observe of the K-game venv are one part; `of_which_observe_human_frames` times a second observe() of the same
    venv (render_mode="rgb_array" draws each game's 512x512 human frame too); freeing the K games is another part."""
    import gc

    venv_idx = copy_venv(venv, 0)
    sb_back = venv_idx.callmethod("get_state")[0]
    grid = EnvState(sb_back).inner_grid(with_mouse=False)
    legal = get_legal_mouse_positions(grid)
    padding = (WORLD_DIM - grid.shape[0]) // 2

    def copy_and_read():
        return copy_venv(venv, 0).callmethod("get_state")[0]

    def edits():
        env_state, out = EnvState(sb_back), []
        for mx, my in legal:
            env_state.set_mouse_pos(mx + padding, my + padding)
            out.append(env_state.state_bytes)
            env_state.state_bytes = sb_back
        return out

    blobs = edits()
    made: list = []

    def new_venv_observed():
        venv_all = create_venv(num=len(legal), num_threads=1, num_levels=1, start_level=1)
        venv_all.callmethod("set_state", blobs)
        made.append(venv_all)
        return torch.tensor(observe_venv(venv_all), dtype=torch.float32)

    def free_venvs():
        made.clear()
        gc.collect()

    times: dict[str, list[float]] = {"new_venv_set_state_first_observe": [], "free_venv": []}
    for _ in range(reps):
        start = time.perf_counter()
        obs = new_venv_observed()
        times["new_venv_set_state_first_observe"].append(time.perf_counter() - start)
        second = _median_time(lambda: torch.tensor(observe_venv(made[-1]), dtype=torch.float32), 1)
        start = time.perf_counter()
        free_venvs()
        times["free_venv"].append(time.perf_counter() - start)

    def forward():
        with torch.no_grad():
            return peer_policy(obs)[0].probs

    probs = forward()
    return {
        "copy_venv": _median_time(copy_and_read, reps),
        "state_edits_parse_deepcopy_serialize": _median_time(edits, reps),
        "new_venv_set_state_first_observe": statistics.median(times["new_venv_set_state_first_observe"]),
        "of_which_observe_human_frames": second,
        "free_venv": statistics.median(times["free_venv"]),
        "forward_one_batch": _median_time(forward, reps),
        "per_cell_dicts": _median_time(lambda: get_arrows_and_probs(legal, probs), reps),
    }


def field_rows(quick: bool = False, threads: int = 1) -> list[dict]:
    """Rows for benchmarks/run.py: per maze size, ours vs procgen-tools' method (s/call), ratio peer / ours with the
    >= 10x target; the profile of both sides in the details. Raises AssertionError if the probabilities differ."""
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import published_config
    from workbench.rl.vector_field import vector_field

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    policy = ImpalaPolicy(published_config()).eval()
    peer_policy = categorical_policy(policy)
    rounds, reps = (2, 1) if quick else (5, 3)
    rows = []
    for maze_dim in sorted(LEVEL_SEEDS):
        venv, level = field_level(maze_dim)
        diff = check_same(policy, peer_policy, venv, level)
        t_ours, t_peer = _interleaved(
            [
                lambda level=level: vector_field(policy, level),
                lambda venv=venv: procgen_tools_vector_field(venv, peer_policy),
            ],
            rounds,
        )
        ours, peer = statistics.median(t_ours), statistics.median(t_peer)
        prof_ours, prof_peer = profile_ours(policy, level, reps), profile_peer(peer_policy, venv, reps)
        cells = len(level.free_cells(0))
        rest = sum(v for k, v in prof_ours.items() if not k.startswith("forward"))
        rows.append(
            {
                "name": f"procgen vector field {maze_dim}x{maze_dim} ({cells} cells, level seed "
                f"{LEVEL_SEEDS[maze_dim]}): ours vs procgen-tools' method, {threads} torch thread(s)",
                "unit": "s/call",
                "ours": ours,
                "peer": peer,
                "peer_label": "procgen-tools vector_field (reimplemented)",
                "ratio": peer / ours,
                "ratio_label": "procgen-tools / ours",
                "target": (">=", TARGET),
                "details": {
                    "maze_dim": maze_dim,
                    "level_seed": LEVEL_SEEDS[maze_dim],
                    "cells": cells,
                    "threads": threads,
                    "rounds": rounds,
                    "max_abs_prob_diff": diff,
                    "ours_s": {"median": ours, "min": min(t_ours), "max": max(t_ours)},
                    "peer_s": {"median": peer, "min": min(t_peer), "max": max(t_peer)},
                    "profile_ours_s": prof_ours,
                    "profile_peer_s": prof_peer,
                    # if ours cost nothing but a forward as fast as procgen-tools' own, the ratio would be this:
                    "ceiling_ratio_same_forward": peer / prof_peer["forward_one_batch"],
                    # ours with vector_field's forward in channels-last, chunks of 64 (profile parts summed):
                    "projected_ratio_channels_last_chunks": peer
                    / (rest + prof_ours["forward_channels_last_chunks_64"]),
                },
            }
        )
    return rows


def profile_lines(row: dict) -> list[str]:
    """The profile of one row as text: both sides' parts in ms, the ceiling and the projected ratio."""
    d = row["details"]

    def fmt(parts):
        return ", ".join(f"{k} {v * 1e3:.0f}" for k, v in parts.items())

    return [
        f"{d['maze_dim']}x{d['maze_dim']} ({d['cells']} cells): ours {row['ours'] * 1e3:.0f} ms, procgen-tools "
        f"{row['peer'] * 1e3:.0f} ms, ratio {row['ratio']:.2f}x, max |dp| {d['max_abs_prob_diff']:.1e}",
        f"  ours (ms): {fmt(d['profile_ours_s'])}",
        f"  procgen-tools (ms): {fmt(d['profile_peer_s'])}",
        f"  ceiling with the same forward as procgen-tools: {d['ceiling_ratio_same_forward']:.1f}x; projected with "
        f"a channels-last forward in chunks of 64: {d['projected_ratio_channels_last_chunks']:.1f}x",
    ]


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    for r in field_rows(quick=args.quick, threads=args.threads):
        print("\n".join(profile_lines(r)))
