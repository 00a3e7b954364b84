"""Side-by-side performance benchmarks for workbench: each of our fast paths timed next to the slow path it replaces.

What is compared, and why:

1. Maze env throughput. `MazeVecEnv` steps N mazes with array ops and no Python loop per maze; that is what makes
   CPU PPO training practical. We report env transitions per second (summed over envs, random actions drawn up
   front from a seeded numpy rng, episodes autoreset as they finish) at num_envs = 1, 64 and 1024. The peer is
   the obvious alternative: 64 independent `MazeVecEnv(1)` instances stepped one at a time in a Python loop, with
   the same number of transitions; the ratio is batched / looped at 64.
2. Hooked forward overhead. `run_with_cache` attaches forward hooks for one call only, so caching one activation
   should cost almost nothing over a plain forward. We time `policy(obs)` against `run_with_cache(policy, obs,
   names_filter="embedder.block2.res1.resadd_out")` on the maze policy (batch 64, no_grad, one torch thread); the
   ratio is hooked / plain, target <= 1.15x.
3. Vector field. `vector_field` computes the policy's action distribution at every free cell of a maze in one
   batched forward; `vector_field_loop` does one forward per cell. Both must give the same probabilities (checked);
   the ratio is loop time / batched time on a 15x15 maze, target >= 10x.

How close to the machine: for the compute-bound kernels (the policy forward, probe fitting, SAE training) a row
also reports achieved GFLOP/s, counted analytically (conv and linear multiply-adds x 2; for probes the products of
the iterations with the design matrices; for SAEs encoder + decoder, forward + backward), as a fraction of this
machine's dense float32 matmul peak, measured in the same run (`torch.mm` on 2048 x 2048, best of several, same
thread count).

Why side by side in one run: absolute timings move with the machine and its load, ratios much less so. Each pair is
measured interleaved (A, B, A, B, ... in rounds, after warm-up) and summarised by the median per-call time over
rounds, so slow drift in background load hits both sides alike. Pass/fail against the targets is informational:
the script exits 0 whatever the numbers (performance is not a test); it exits non-zero only if a correctness check
fails.

Usage: python benchmarks/run.py [--quick] [--json PATH] [--markdown] [--only SECTION ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from workbench import artifacts
from workbench.hooks import run_with_cache
from workbench.rl.envs.maze import MazeConfig, MazeLevels, MazeVecEnv, generate_levels, observe
from workbench.rl.policies import ImpalaPolicy, PolicyConfig
from workbench.rl.vector_field import vector_field, vector_field_loop

AGENT_NAME = "maze-cheese-corner"
HOOK_NAME = "embedder.block2.res1.resadd_out"
ENV_SIZES = (1, 64, 1024)
LOOP_ENVS = 64
FORWARD_BATCH = 64
FIELD_SIZE = 15
FIELD_SEEDS = 51  # search level seeds 0..50 for the first maze of side FIELD_SIZE
PROBS_ATOL = 1e-5
VS_PROCGEN_ENVS = 64  # issue #16's env target: native >= 20x procgen at 64 envs, per CPU second


# ------------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Repeat counts. `steps[n]` is env steps per round for num_envs = n (the looped peer takes as many per env)."""

    env_rounds: int
    steps: dict[int, int]
    forward_rounds: int
    forward_inner: int
    field_rounds: int
    warmup: int


FULL = Settings(
    env_rounds=5, steps={1: 2000, 64: 200, 1024: 40}, forward_rounds=30, forward_inner=5, field_rounds=10, warmup=3
)
QUICK = Settings(
    env_rounds=3, steps={1: 500, 64: 50, 1024: 10}, forward_rounds=6, forward_inner=2, field_rounds=3, warmup=1
)


# --------------------------------------------------------------------------------------------------------- timing
def interleaved(
    cases: Sequence[Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    inner: int = 1,
    cpu: list[list[float]] | None = None,
) -> list[list[float]]:
    """Seconds per call of each case in every round, measured A, B, A, B, ... so load drift hits all cases alike.

    Each case is first called `warmup` times untimed; then every round times `inner` back-to-back calls of each case
    in turn. Returns one list of per-call times per case, one entry per round. With `cpu` (an empty list) the same
    calls' CPU seconds of this thread are appended to it, one list per case (what a call costs on a shared machine,
    where the wall clock also counts the time other tenants hold the core).
    """
    for case in cases:
        for _ in range(warmup):
            case()
    samples: list[list[float]] = [[] for _ in cases]
    if cpu is not None:
        cpu[:] = [[] for _ in cases]
    for _ in range(rounds):
        for i, (case, out) in enumerate(zip(cases, samples, strict=True)):
            start, start_cpu = time.perf_counter(), time.thread_time()
            for _ in range(inner):
                case()
            out.append((time.perf_counter() - start) / inner)
            if cpu is not None:
                cpu[i].append((time.thread_time() - start_cpu) / inner)
    return samples


def summary(samples: list[float]) -> dict[str, float | int]:
    """Median, min and max per-call seconds over rounds."""
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "rounds": len(samples),
    }


# ----------------------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class Target:
    """An informational target on a ratio: `ratio <= value` or `ratio >= value`."""

    op: str
    value: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.value if self.op == "<=" else ratio >= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}x"


@dataclass
class Row:
    """One line of the results table. `ours` and `peer` are in `unit`; `ratio_label` says how `ratio` was formed
    (e.g. `loop / batched`), and `target`, when there is one, says which way is good."""

    name: str
    unit: str
    ours: float
    peer: float | None = None
    peer_label: str = ""
    ratio: float | None = None
    ratio_label: str = ""
    target: Target | None = None
    details: dict | None = None
    gflops: float | None = None  # achieved GFLOP/s of our side, for compute-bound kernels (see the module doc)
    why: str = ""  # where the time goes and which bound stops it (printed under the table), from this run's profile

    @property
    def passed(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.target.met(self.ratio)

    def to_json(self) -> dict:
        out = asdict(self)
        out["target"] = str(self.target) if self.target else None
        out["passed"] = self.passed
        return out


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "steps/s":
        return f"{value:,.0f} steps/s"
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    if unit == "s/call":
        return f"{value * 1e3:.2f} ms/call"
    if unit == "GFLOP/s":
        return f"{value:.1f} GFLOP/s"
    return f"{value:g} {unit}"


# ------------------------------------------------------------------------------------------------- machine limit
PEAK_SIZE = 2048


def matmul_peak_gflops(size: int = PEAK_SIZE, repeats: int = 7) -> dict:
    """This machine's dense float32 matmul rate under the current torch thread count: the best of `repeats` timed
    `torch.mm` calls on (size x size) @ (size x size) after one warm-up, 2 size^3 FLOPs each. On one torch thread
    `gflops` divides by the CPU seconds of the process (the core's rate while it ran this process; on a shared,
    loaded machine the wall clock also counts other tenants and can halve the figure); with more threads, by wall
    seconds (process CPU time would add the threads up). `wall_gflops` is always per wall second."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    flops = 2.0 * size**3
    clock = cpu if torch.get_num_threads() == 1 else times
    return {"size": size, "repeats": repeats, "best_s": min(clock), "gflops": flops / min(clock) / 1e9,
            "median_gflops": flops / statistics.median(clock) / 1e9, "wall_gflops": flops / min(times) / 1e9,
            "clock": "process CPU second" if clock is cpu else "wall second"}  # fmt: skip


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward of `model` on `x`: 2 x the multiply-adds of every Conv2d and Linear (elementwise
    work, pooling and activations are not counted: they are memory-bound and a few percent of the total)."""
    total = 0.0

    def hook(module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2.0 * output.numel() * k
        elif isinstance(module, torch.nn.Linear):
            total += 2.0 * output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


# ------------------------------------------------------------------------------------------------ 1. env throughput
class Stepper:
    """Steps a list of envs through pre-generated random actions, one chunk of `steps` steps per call.

    With one env of num_envs = N this is the batched path; with N envs of num_envs = 1 it is the Python loop.
    Actions (chunks, steps, total envs) come from a seeded rng up front, so the timed region is stepping only.
    """

    def __init__(self, envs: list[MazeVecEnv], steps: int, chunks: int, seed: int) -> None:
        self.envs = envs
        self.total = sum(env.num_envs for env in envs)
        rng = np.random.default_rng(seed)
        self.actions = rng.integers(0, 4, size=(chunks, steps, self.total), dtype=np.int64)
        self.bounds = np.cumsum([0] + [env.num_envs for env in envs])
        self.chunk = 0
        for i, env in enumerate(envs):
            env.reset(seed=seed + i)

    @property
    def transitions_per_call(self) -> int:
        return self.actions.shape[1] * self.total

    def __call__(self) -> None:
        actions = self.actions[self.chunk % len(self.actions)]
        self.chunk += 1
        if len(self.envs) == 1:
            env = self.envs[0]
            for a in actions:
                env.step(a)
            return
        bounds = self.bounds
        for a in actions:
            for i, env in enumerate(self.envs):
                env.step(a[bounds[i] : bounds[i + 1]])


def bench_env(settings: Settings) -> list[Row]:
    rows: list[Row] = []
    chunks = settings.warmup + settings.env_rounds
    for n in ENV_SIZES:
        steps = settings.steps[n]
        batched = Stepper([MazeVecEnv(n, "train")], steps, chunks, seed=0)
        if n != LOOP_ENVS:
            (times,) = interleaved([batched], settings.env_rounds, warmup=settings.warmup)
            stats = summary(times)
            rate = batched.transitions_per_call / stats["median_s"]
            rows.append(Row(f"maze env, num_envs={n}", "steps/s", rate, details={"batched": stats, "steps": steps}))
            continue
        looped = Stepper([MazeVecEnv(1, "train") for _ in range(n)], steps, chunks, seed=0)
        assert looped.transitions_per_call == batched.transitions_per_call
        t_batched, t_looped = interleaved([batched, looped], settings.env_rounds, warmup=settings.warmup)
        s_batched, s_looped = summary(t_batched), summary(t_looped)
        rate_batched = batched.transitions_per_call / s_batched["median_s"]
        rate_looped = looped.transitions_per_call / s_looped["median_s"]
        rows.append(
            Row(
                f"maze env, num_envs={n} (vs {n} x MazeVecEnv(1) loop)",
                "steps/s",
                rate_batched,
                peer=rate_looped,
                peer_label=f"python loop over {n} envs",
                ratio=rate_batched / rate_looped,
                ratio_label="batched / looped",
                details={"batched": s_batched, "looped": s_looped, "steps": steps},
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------------- the policy
def load_policy() -> tuple[ImpalaPolicy, MazeConfig, str]:
    """The shipped `maze-cheese-corner` agent if present, else a seeded random policy of the same shape."""
    if AGENT_NAME in artifacts.available("agents"):
        from workbench.rl.agent import load_agent

        agent = load_agent(AGENT_NAME)
        return agent.policy.eval(), agent.env_config, f"trained agent {AGENT_NAME!r} (load_agent)"
    torch.manual_seed(0)
    cfg = PolicyConfig(channels=(8, 16, 32), pool=(False, True, True), hidden=128)
    source = f"random-init ImpalaPolicy{cfg.channels} (no {AGENT_NAME!r} artifact; same shape)"
    return ImpalaPolicy(cfg).eval(), MazeConfig(), source


# ------------------------------------------------------------------------------------------ 2. hooked forward cost
def bench_forward(policy: ImpalaPolicy, env_config: MazeConfig, settings: Settings) -> Row:
    obs = torch.as_tensor(observe(generate_levels(np.arange(FORWARD_BATCH), "ood", env_config)))

    def plain() -> object:
        return policy(obs)

    def hooked() -> object:
        return run_with_cache(policy, obs, names_filter=HOOK_NAME)

    with torch.no_grad():
        _, cache = hooked()
        if HOOK_NAME not in cache:
            raise AssertionError(f"run_with_cache did not cache {HOOK_NAME!r}")
        t_plain, t_hooked = interleaved(
            [plain, hooked], settings.forward_rounds, warmup=settings.warmup, inner=settings.forward_inner
        )
    s_plain, s_hooked = summary(t_plain), summary(t_hooked)
    flops = forward_flops(policy, obs)
    return Row(
        f"run_with_cache forward, batch {FORWARD_BATCH} (1 hook)",
        "s/call",
        s_hooked["median_s"],
        peer=s_plain["median_s"],
        peer_label="plain policy(obs)",
        ratio=s_hooked["median_s"] / s_plain["median_s"],
        ratio_label="hooked / plain",
        target=Target("<=", 1.15),
        details={
            "hooked": s_hooked,
            "plain": s_plain,
            "hook": HOOK_NAME,
            "inner": settings.forward_inner,
            "forward_flops": flops,
        },
        gflops=flops / s_hooked["median_s"] / 1e9,
    )


def bench_pool(policy: ImpalaPolicy, env_config: MazeConfig, settings: Settings) -> Row:
    """The policy forward on a channels-first batch (as rollouts and collection run it) with its max-pools run in the
    channels-last layout (`workbench.rl.policies.MaxPool`) vs the same policy with torch's `nn.MaxPool2d` back in
    place; the logits and values must be bit-identical (checked). Per-call CPU seconds on one thread, else wall."""
    import copy

    from workbench.rl.policies import MaxPool

    ref = copy.deepcopy(policy)
    for module in ref.modules():
        for name, child in module.named_children():
            if isinstance(child, MaxPool):
                setattr(module, name, torch.nn.MaxPool2d(child.kernel_size, child.stride, child.padding))
    obs = torch.as_tensor(observe(generate_levels(np.arange(FORWARD_BATCH), "ood", env_config)))
    cpu: list[list[float]] = []
    with torch.no_grad():
        ours, theirs = policy(obs), ref(obs)
        if not all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)):
            raise AssertionError("the channels-last max-pool changed the policy's outputs")
        walls = interleaved(
            [lambda: policy(obs), lambda: ref(obs)],
            settings.forward_rounds,
            warmup=settings.warmup,
            inner=settings.forward_inner,
            cpu=cpu,
        )
    fast, plain = (summary(c) for c in (cpu if one_thread() else walls))
    flops = forward_flops(policy, obs)
    return Row(
        f"policy forward, batch {FORWARD_BATCH}, channels-first: channels-last max-pool (outputs bit-identical)",
        "s/call",
        fast["median_s"],
        peer=plain["median_s"],
        peer_label="torch nn.MaxPool2d",
        ratio=plain["median_s"] / fast["median_s"],
        ratio_label=f"before / after, {'CPU' if one_thread() else 'wall'} time",
        details={"ours": fast, "torch_pool": plain, "inner": settings.forward_inner, "forward_flops": flops},
        gflops=flops / fast["median_s"] / 1e9,
    )


# --------------------------------------------------------------------------------------------------- 3. vector field
def field_level(env_config: MazeConfig) -> MazeLevels:
    """The first level among seeds 0..FIELD_SEEDS-1 whose maze side is FIELD_SIZE."""
    config = MazeConfig(world_size=env_config.world_size, max_size=FIELD_SIZE)
    levels = generate_levels(np.arange(FIELD_SEEDS), "ood", config)
    hits = np.flatnonzero(levels.size == FIELD_SIZE)
    if hits.size == 0:
        raise RuntimeError(f"no level seed in 0..{FIELD_SEEDS - 1} gives a {FIELD_SIZE}x{FIELD_SIZE} maze")
    return levels.select(hits[:1])


def one_thread() -> bool:
    """Whether torch runs on one thread: then a call's CPU seconds are its cost on a shared machine (the wall clock
    also counts other tenants); with more threads this thread's CPU time misses the workers', so wall time is used."""
    return torch.get_num_threads() == 1


def conv_profile(model: torch.nn.Module, x: torch.Tensor, repeats: int = 5) -> list[dict]:
    """Per Conv2d layer of one forward on `x`: median seconds (CPU seconds of this thread on one torch thread, else
    wall; timed by pre/post forward hooks), FLOPs and GFLOP/s, in forward order. Where a compute-bound forward
    spends its time, layer by layer."""
    clock = time.thread_time if one_thread() else time.perf_counter
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    times: dict[str, list[float]] = {n: [] for n, _ in layers}
    flops: dict[str, float] = {}
    started: dict[str, float] = {}

    def pre(name: str):
        def hook(_module: torch.nn.Module, _inputs: tuple) -> None:
            started[name] = clock()

        return hook

    def post(name: str):
        def hook(module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            times[name].append(clock() - started[name])
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            flops[name] = 2.0 * output.numel() * k

        return hook

    handles = [m.register_forward_pre_hook(pre(n)) for n, m in layers]
    handles += [m.register_forward_hook(post(n)) for n, m in layers]
    try:
        with torch.no_grad():
            model(x)  # warm-up
            for t in times.values():
                t.clear()
            for _ in range(repeats):
                model(x)
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, module in layers:
        sec = statistics.median(times[name])
        shape = f"{module.in_channels}->{module.out_channels}"
        out.append(
            {"layer": name, "channels": shape, "s": sec, "flops": flops[name], "gflops": flops[name] / sec / 1e9}
        )
    return out


def bench_field(policy: ImpalaPolicy, env_config: MazeConfig, settings: Settings, peak_gflops: float) -> Row:
    """Vector field batched vs one forward per cell, wall and CPU time, with where the batched call's time goes.

    On one torch thread the target is judged on CPU seconds of this thread (on a shared machine the wall clock also
    counts the time other tenants hold the core), with the wall ratio in the name and the details; with more
    threads, on wall time (see `one_thread`)."""
    level = field_level(env_config)
    batched, looped = vector_field(policy, level), vector_field_loop(policy, level)
    if not np.array_equal(batched.cells, looped.cells):
        raise AssertionError("vector_field and vector_field_loop disagree on the free cells")
    max_diff = float(np.abs(batched.probs - looped.probs).max())
    if not np.allclose(batched.probs, looped.probs, atol=PROBS_ATOL):
        raise AssertionError(f"vector_field and vector_field_loop disagree: max |dp| = {max_diff:.2e}")
    cpu: list[list[float]] = []
    t_batched, t_looped = interleaved(
        [lambda: vector_field(policy, level), lambda: vector_field_loop(policy, level)],
        settings.field_rounds,
        warmup=settings.warmup,
        cpu=cpu,
    )
    s_batched, s_looped = summary(t_batched), summary(t_looped)
    c_batched, c_looped = summary(cpu[0]), summary(cpu[1])
    if not one_thread():
        c_batched, c_looped = s_batched, s_looped
    clock_name = "CPU time" if one_thread() else "wall time"
    seed, cells = int(level.seeds[0]), len(batched.cells)
    wall_ratio = s_looped["median_s"] / s_batched["median_s"]
    cpu_ratio = c_looped["median_s"] / c_batched["median_s"]

    # Where the time goes: the batched forward's FLOPs and rate, its conv layers, and the per-cell call's forward.
    grid = level.select(np.zeros(cells, dtype=np.int64)).with_mouse(batched.cells)
    obs = torch.as_tensor(grid.observe()).contiguous(memory_format=torch.channels_last)
    flops = forward_flops(policy, obs)
    gflops = flops / c_batched["median_s"] / 1e9
    convs = conv_profile(policy, obs)
    conv_s = sum(c["s"] for c in convs)
    groups: dict[str, dict[str, float]] = {}
    for c in convs:
        g = groups.setdefault(c["channels"], {"s": 0.0, "flops": 0.0})
        g["s"] += c["s"]
        g["flops"] += c["flops"]
    one = torch.as_tensor(level.with_mouse(batched.cells[:1]).observe())
    with torch.no_grad():
        (t_one,) = interleaved([lambda: policy(one)], settings.forward_rounds, settings.warmup, inner=cells, cpu=cpu)
    one_s = statistics.median(cpu[0] if one_thread() else t_one)
    per_cell = c_looped["median_s"] / cells
    ceiling = c_looped["median_s"] / (flops / (peak_gflops * 1e9))
    need = 10.0 * flops / c_looped["median_s"] / 1e9
    layer_text = "; ".join(
        f"{k} channels {g['s'] / conv_s:.0%} of conv time at {g['flops'] / g['s'] / 1e9:.0f} GFLOP/s"
        for k, g in sorted(groups.items(), key=lambda kv: -kv[1]["s"])
    )
    why = (
        f"batched call {c_batched['median_s'] * 1e3:.1f} ms ({clock_name}): one forward of {cells} observations, "
        f"{flops / 1e9:.2f} GFLOP at {gflops:.1f} GFLOP/s = {gflops / peak_gflops:.0%} of the {peak_gflops:.1f} "
        f"GFLOP/s matmul peak; convolutions {conv_s * 1e3:.1f} ms ({layer_text}). Per-cell reference: "
        f"{per_cell * 1e3:.3f} ms per cell, of which the batch-1 forward {one_s * 1e3:.3f} ms "
        f"({one_s / per_cell:.0%}). "
        f"10x needs the batched forward at {need:.1f} GFLOP/s ({need / peak_gflops:.0%} of peak); at 100% of peak "
        f"the ratio would be {ceiling:.1f}x. Bound: the convolutions (compute), slowest per FLOP at the fewest "
        "channels."
    )
    return Row(
        f"vector field {FIELD_SIZE}x{FIELD_SIZE} (seed {seed}, {cells} cells); wall: {s_batched['median_s'] * 1e3:.1f} "
        f"vs {s_looped['median_s'] * 1e3:.1f} ms = {wall_ratio:.2f}x",
        "s/call",
        c_batched["median_s"],
        peer=c_looped["median_s"],
        peer_label="one forward per cell",
        ratio=cpu_ratio,
        ratio_label=f"loop / batched, {clock_name}",
        target=Target(">=", 10.0),
        details={
            "batched": s_batched,
            "looped": s_looped,
            "batched_cpu": c_batched,
            "looped_cpu": c_looped,
            "wall_ratio": wall_ratio,
            "cpu_ratio": cpu_ratio,
            "level_seed": seed,
            "cells": cells,
            "max_abs_prob_diff": max_diff,
            "forward_flops": flops,
            "conv_layers": convs,
            "batch1_forward_cpu_s": one_s,
            "ratio_at_peak": ceiling,
            "gflops_needed_for_10x": need,
        },
        gflops=gflops,
        why=why,
    )


# ---------------------------------------------------------------------------------------------------------- output
def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if hasattr(os, "getloadavg"):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return info


HEADERS = ("benchmark", "ours", "peer / baseline", "ratio", "target", "pass/fail", "GFLOP/s (of peak)")


def table_cells(row: Row, peak_gflops: float | None = None) -> tuple[str, ...]:
    peer = fmt_value(row.peer, row.unit) + (f" ({row.peer_label})" if row.peer_label else "")
    ratio = f"{row.ratio:.2f}x ({row.ratio_label})" if row.ratio is not None else "-"
    verdict = {True: "pass", False: "FAIL", None: "-"}[row.passed]
    target = str(row.target) if row.target else "-"
    flops = "-"
    if row.gflops is not None:
        flops = f"{row.gflops:.1f}" + (f" ({row.gflops / peak_gflops:.1%})" if peak_gflops else "")
    ours = fmt_value(row.ours, row.unit)
    return (row.name, ours, peer if row.peer is not None else "-", ratio, target, verdict, flops)


def why_lines(rows: list[Row]) -> list[str]:
    """Under the table: for each row with a target, where its time goes and which bound stops it (from this run)."""
    out = []
    for row in rows:
        if row.why:
            verdict = {True: "met", False: "NOT MET", None: "no target"}[row.passed]
            out += ["", f"{row.name} [target {row.target or '-'}: {verdict}]"]
            out += [f"    {line.strip()}" for line in row.why.splitlines() if line.strip()]
    return out


def peak_row(peak: dict) -> Row:
    """The machine's own limit as a row: the dense float32 matmul rate every GFLOP/s column is a fraction of."""
    return Row(
        name=f"machine: dense float32 matmul peak (torch.mm {peak['size']}x{peak['size']}, best of {peak['repeats']} "
        f"per {peak['clock']}; median {peak['median_gflops']:.1f}, best per wall second {peak['wall_gflops']:.1f})",
        unit="GFLOP/s",
        ours=peak["gflops"],
        details=peak,
        gflops=peak["gflops"],
    )


def print_markdown(rows: list[Row], info: dict, notes: list[str]) -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    for note in notes:
        print(note)
    print()
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "|".join("---" for _ in HEADERS) + "|")
    for row in rows:
        print("| " + " | ".join(table_cells(row, info.get("matmul_peak_gflops"))) + " |")
    for line in why_lines(rows):
        print(line)


def print_rich(rows: list[Row], info: dict, notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    table = Table(title="workbench benchmarks (side by side, medians over interleaved rounds)")
    for header in HEADERS:
        table.add_column(header, justify="right" if header in ("ours", "ratio") else "left")
    styles = {"pass": "green", "FAIL": "red"}
    for row in rows:
        values = list(table_cells(row, info.get("matmul_peak_gflops")))
        style = styles.get(values[-1])
        values[-1] = f"[{style}]{values[-1]}[/]" if style else values[-1]
        table.add_row(*values)
    console.print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), highlight=False)
    for note in notes:
        console.print(note, highlight=False)
    console.print(table)
    for line in why_lines(rows):
        console.print(line, highlight=False, markup=False)


COLLECT_START_BASELINE = 18.0  # rows/s: start-state collection when issue #16 was filed (its "18 rows/s")


def _profiled_seconds(stats, names: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Cumulative seconds of functions in a cProfile run, by (file suffix, function name)."""
    out = dict.fromkeys(names, 0.0)
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        for key, (suffix, name) in names.items():
            if func == name and path.endswith(suffix):
                out[key] += ct
    return out


def bench_collect(quick: bool, peak_gflops: float) -> list[Row]:
    """Labelled-dataset collection throughput with a one-hook cache: start states (with outcome labels, against the
    issue's >= 10x-of-18-rows/s target) and full rollouts. The start-state run is profiled (cProfile, a few hundred
    calls into heavy numpy/torch ops, so its overhead is small) to say where the time goes: the outcome rollouts
    (one batched rollout of all levels, forwarding only live envs), the ground-truth labels, the activation forward
    and dataset assembly. On one torch thread, times and the target are per CPU second of the process (on a shared
    machine the wall clock also counts other tenants), with the wall rate in the name; with more threads, per wall
    second (see `one_thread`)."""
    import cProfile
    import pstats

    from workbench.activations import collect_maze
    from workbench.policy import policy_logits
    from workbench.rl import loop

    agent = load_agent_or_none()
    if agent is None:
        return []
    hook = "embedder.block2.res1.resadd_out"
    rows = []
    for states, episodes in (("start", 200 if quick else 2000), ("rollout", 20 if quick else 200)):
        timer = time.process_time if one_thread() else time.perf_counter
        profiler = cProfile.Profile(timer) if states == "start" else None
        start, start_cpu = time.perf_counter(), time.process_time()
        forwarded = 0  # rows the rollout loop hands to the policy (distinct observations; the rest reuse logits)

        def counting(policy: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            nonlocal forwarded
            forwarded += x.shape[0]
            return policy_logits(policy, x)

        if profiler:
            profiler.enable()
        loop.policy_logits = counting
        try:
            ds = collect_maze(agent, [hook], split="ood", episodes=episodes, seed=0, states=states, progress=False)
        finally:
            loop.policy_logits = policy_logits
            if profiler:
                profiler.disable()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        cost = cpu if one_thread() else elapsed  # seconds the target is judged on (see `one_thread`)
        per = "CPU" if one_thread() else "wall"
        name = f"collect {states} states, 1 hook ({len(ds):,} rows incl. labels and outcomes)"
        if states == "rollout":
            rows.append(
                Row(name=f"{name}; {len(ds) / elapsed:,.0f} rows per wall s", unit="rows/s", ours=len(ds) / cost)
            )
            continue
        parts = _profiled_seconds(
            pstats.Stats(profiler),
            {
                "outcome rollouts": ("rl/loop.py", "play_until_done"),
                "labels": ("rl/collect.py", "__init__"),  # _MazeLabeller: BFS distance maps, decision squares
                "activation forward": ("rl/collect.py", "_collect_start"),
            },
        )
        parts["dataset assembly and the rest"] = max(cost - sum(parts.values()), 0.0)
        steps = int(ds.label("outcome_length").sum())  # (env, step) rows of the outcome rollouts
        obs = torch.as_tensor(agent.world.levels("ood", 1, 0).observe())
        row_flops = forward_flops(agent.policy, obs)
        roll_s = parts["outcome rollouts"]
        roll_gflops = forwarded * row_flops / roll_s / 1e9 if roll_s > 0 else 0.0
        floor_s = forwarded * row_flops / (peak_gflops * 1e9)
        target_rate = 10 * COLLECT_START_BASELINE
        biggest = max(parts, key=parts.__getitem__)
        why = (
            f"{elapsed:.1f} s wall, {cpu:.1f} s CPU: "
            + ", ".join(f"{k} {v:.1f} s ({v / cost:.0%})" for k, v in parts.items())
            + f". The outcome rollouts take {steps:,} (env, step) rows ({steps / len(ds):.1f} per level; episodes run "
            f"to the cap of {agent.env_config.max_steps} steps when the policy is stuck) and forward {forwarded:,} of "
            f"them, the distinct observations ({forwarded / max(steps, 1):.0%}; a repeat reuses its logits), at "
            f"{row_flops / 1e6:.1f} MFLOP each: {roll_gflops:.1f} GFLOP/s = {roll_gflops / peak_gflops:.0%} of the "
            f"{peak_gflops:.1f} GFLOP/s peak. At 100% of peak they alone would take {floor_s:.1f} s. "
            f"{target_rate:.0f} rows/s needs {len(ds) / target_rate:.1f} s in all. Largest part: {biggest} "
            f"({parts[biggest] / cost:.0%})."
        )
        rows.append(
            Row(
                name=f"{name}; {len(ds) / elapsed:,.0f} rows per wall s",
                unit="rows/s",
                ours=len(ds) / cost,
                peer=COLLECT_START_BASELINE,
                peer_label="issue #16's starting figure (not re-measured)",
                ratio=len(ds) / cost / COLLECT_START_BASELINE,
                ratio_label=f"rows per {per} s / 18",
                target=Target(">=", 10.0),
                details={
                    "rows": len(ds),
                    "wall_s": elapsed,
                    "cpu_s": cpu,
                    "rows_per_wall_s": len(ds) / elapsed,
                    "profile_cpu_s": parts,
                    "rollout_rows": steps,
                    "forwarded_rows": forwarded,
                    "forward_flops_per_row": row_flops,
                    "rollout_gflops": roll_gflops,
                    "rollout_floor_at_peak_s": floor_s,
                },
                gflops=roll_gflops,
                why=why,
            )
        )
    return rows


def load_agent_or_none():
    from workbench.artifacts import available
    from workbench.rl.agent import load_agent

    return load_agent("maze-cheese-corner") if "maze-cheese-corner" in available("agents") else None


def probe_row(r: dict, peak_gflops: float) -> Row:
    """One logistic-probe comparison (bench_probes.py) as a table row: time per fit of all P probes, ratio =
    sklearn / ours, held-out |dAUROC| and iteration counts in the name, achieved GFLOP/s of our fit."""
    from bench_probes import describe

    name = (
        f"{describe(r)}, {r['threads']} thread(s): |dAUROC| {r['max_abs_auroc_diff']:.1e}, iters "
        f"{r['ours_median_n_iter']:.0f} vs {r['sklearn_median_n_iter']:.0f} (median)"
    )
    return Row(
        name=name,
        ours=r["time_ours_s"],
        peer=r["time_sklearn_s"],
        unit="s",
        peer_label="scikit-learn LogisticRegression(lbfgs), one at a time",
        ratio=r["speedup"],
        ratio_label="sklearn / ours",
        target=Target(">=", 10.0),
        details=r,
        gflops=r["gflops_ours"],
        why=probe_why(r, peak_gflops),
    )


def probe_why(r: dict, peak_gflops: float) -> str:
    """What bounds one probe comparison, from bench_probes.py's own measurements in the same run: case (a) is
    compute (one product per pass serves every probe); case (b) is the matrix-vector products' rate on this CPU
    (the per-probe profile and the machine's measured read and product rates), not DRAM and not iterations."""
    shared = r["case"] == "shared"
    passes = r["passes_ours"] if shared else r["passes_ours"] / r["p"]
    head = (
        f"ours {passes:.0f} passes{'' if shared else ' per probe'} (median {r['ours_median_n_iter']:.0f} L-BFGS "
        f"iterations per probe), sklearn median {r['sklearn_median_n_iter']:.0f} iterations; "
        f"{r['gflops_ours']:.1f} GFLOP/s = {r['gflops_ours'] / peak_gflops:.0%} of the matmul peak. Bound: "
    )
    if shared:
        return head + "compute, one matrix product per pass serves every probe."
    prof, mem = r.get("profile_ms"), r.get("memory_gbs") or {}
    if not prof:
        return head + "the matrix-vector products' rate (no per-probe profile in this run)."
    total = prof["copy"] + prof["standardise"] + prof["preconditioner"] + prof["passes"] + prof["lbfgs_rest"]
    return head + (
        f"the products' rate, not DRAM: one probe {total:.0f} ms = transposing copy + moments {prof['copy']:.1f} + "
        f"standardise {prof['standardise']:.1f} + preconditioner {prof['preconditioner']:.1f} + "
        f"{prof['evaluations']:.0f} passes x {prof['ms_per_pass']:.2f} + rest {prof['lbfgs_rest']:.1f}; GEMV "
        f"column-major {mem.get('X v, column-major', float('nan')):.0f} GB/s, row-major "
        f"{mem.get('X v, row-major', float('nan')):.0f} GB/s, plain read from cache "
        f"{mem.get('read, cache-resident (sum)', float('nan')):.0f} GB/s; sklearn needs "
        f"{r['time_sklearn_s'] / r['p'] * 1e3:.0f} ms per probe, so 10x needs "
        f"{r['time_sklearn_s'] / r['p'] * 1e2:.1f} ms."
    )


def app_row(r: dict) -> Row:
    """The Maze lab latency (bench_app.py) as a table row: median page rerun after a cheese move, next to the
    vector-field API call alone; the target is the issue's one second, on the 90th percentile."""
    page, api, field = r["page"], r["api"], r["page_without_probe"]
    return Row(
        name=f"Maze lab: cheese moved -> new vector field, AppTest page rerun ({page['n']} moves, "
        f"p90 {page['p90_s'] * 1e3:.0f} ms; without probe heatmap median {field['median_s'] * 1e3:.0f} ms)",
        unit="s/call",
        ours=page["median_s"],
        peer=api["median_s"],
        peer_label="vector_field API call alone",
        ratio=page["p90_s"] / r["budget_s"],
        ratio_label="p90 / 1 s budget",
        target=Target("<=", 1.0),
        details=r,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run, numbers are noisy")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--markdown", action="store_true", help="print a plain markdown table instead of rich")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every comparison (both sides)")
    parser.add_argument(
        "--probe-n",
        type=int,
        default=20_000,
        help="rows per design matrix for the 100-probe logistic benchmarks (50000 per-probe needs ~6 GB)",
    )
    parser.add_argument("--probe-p", type=int, default=100, help="probes per logistic benchmark")
    parser.add_argument("--skip-probes", action="store_true", help="skip the logistic-probe benchmark")
    parser.add_argument("--skip-sae", action="store_true", help="skip the SAE training benchmark")
    parser.add_argument("--skip-app", action="store_true", help="skip the Maze lab latency benchmark")
    parser.add_argument("--skip-patching", action="store_true", help="skip the activation-patching benchmark")
    parser.add_argument("--skip-procgen", action="store_true", help="skip real procgen vs native env throughput")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("core", "app", "probes", "sae", "patching", "coinrun", "procgen", "retarget", "sweep"),
        help="run only these sections (core = env, hooked forward, vector field, collection)",
    )
    args = parser.parse_args(argv)

    def want(section: str, skipped: bool = False) -> bool:
        return section in args.only if args.only else not skipped

    settings = QUICK if args.quick else FULL

    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    rows: list[Row] = []
    progress(f"dense float32 matmul peak ({PEAK_SIZE} x {PEAK_SIZE}, {args.threads} thread(s))")
    peak = matmul_peak_gflops()
    rows.append(peak_row(peak))
    source = "not loaded (core section not run)"
    if want("core"):
        progress("maze env throughput")
        rows += bench_env(settings)
        policy, env_config, source = load_policy()
        progress("hooked forward overhead")
        rows.append(bench_forward(policy, env_config, settings))
        rows.append(bench_pool(policy, env_config, settings))
        progress("vector field")
        rows.append(bench_field(policy, env_config, settings, peak["gflops"]))
        progress("dataset collection throughput")
        rows += bench_collect(args.quick, peak["gflops"])
    app_result = None
    if want("app", args.skip_app):
        progress("Maze lab latency: cheese move -> new vector field (AppTest page rerun, API call)")
        from bench_app import bench_app_latency

        main_module = sys.modules["__main__"]
        try:
            app_result = bench_app_latency(quick=args.quick, threads=args.threads)
        finally:  # AppTest runs pages as __main__; a later spawn pool (the sweep section) would re-run the page
            sys.modules["__main__"] = main_module
        rows.append(app_row(app_result))
    probe_result = None
    if want("probes", args.skip_probes):
        progress(f"{args.probe_p} logistic probes, 2 cases x 2 kinds: ours vs scikit-learn one at a time")
        from bench_probes import bench_all

        probe_result = bench_all(n=args.probe_n, p=args.probe_p, quick=args.quick, threads=args.threads)
        rows += [probe_row(r, peak["gflops"]) for r in probe_result]
    if want("sae", args.skip_sae):
        progress("SAE training: our shards vs SAELens's ActivationsStore (bench_sae.py)")
        from bench_sae import BATCH, run_sides, table_rows

        tokens = BATCH * (50 if args.quick else 400)
        rows += [Row(unit="rows/s", **r) for r in table_rows(run_sides(tokens, args.threads))]
    patching_result = None
    if want("patching", args.skip_patching):
        progress("activation patching: batched sweep vs transformer_lens.patching; one-hook cache vs cache-all")
        from bench_patching import bench_patching

        patching_result = bench_patching(quick=args.quick, threads=args.threads)
        from bench_patching import describe_bound

        for r in patching_result["rows"]:
            target = r.pop("target", None)
            row = Row(**r, target=Target(*target) if target else None)
            if isinstance(row.details, dict) and "bound" in row.details:
                row.why = describe_bound(row.details)
            rows.append(row)
    if want("coinrun"):
        progress("native CoinRun env throughput (bench_coinrun.py)")
        from bench_coinrun import coinrun_rows

        rows += [Row(**r) for r in coinrun_rows(quick=args.quick)]
    if want("procgen", args.skip_procgen):
        progress("env throughput: real procgen vs native maze / CoinRun (bench_procgen.py)")
        try:
            from bench_procgen import procgen_rows

            for r in procgen_rows(quick=args.quick, threads=args.threads):
                rows.append(Row(**{**r, "target": Target(*r["target"])}))
        except ImportError as e:  # procgen is an optional extra (numpy<2)
            progress(f"procgen section skipped: {e}")
        progress(f"native maze and CoinRun vs procgen at {VS_PROCGEN_ENVS} envs, per CPU second (bench_coinrun.py)")
        try:
            from bench_coinrun import vs_procgen_rows

            size = {"rounds": 2, "steps": 50, "procgen_steps": 10} if args.quick else {}
            for r in vs_procgen_rows(n_envs=VS_PROCGEN_ENVS, **size):
                rows.append(Row(**{**r, "target": Target(*r["target"])}))
        except ImportError as e:
            progress(f"procgen per-CPU-second rows skipped: {e}")
        progress("procgen vector field 13x13 and 23x23: ours vs procgen-tools' method (bench_procgen_field.py)")
        try:
            import procgen  # noqa: F401
        except ImportError as e:  # the optional extra again
            progress(f"procgen vector field skipped: {e}")
        else:
            from bench_procgen_field import field_rows, profile_lines

            for r in field_rows(quick=args.quick, threads=args.threads):  # raises if the probabilities differ
                for line in profile_lines(r):
                    progress(line)
                rows.append(Row(**{**r, "target": Target(*r["target"])}))
    if want("retarget"):
        progress("retargeting sweep: 200 (maze, target) pairs batched vs one rollout per pair (bench_retarget.py)")
        from bench_retarget import retarget_rows

        for r in retarget_rows(quick=args.quick, threads=args.threads):  # raises if the numbers differ
            rows.append(Row(**{**r, "target": Target(*r["target"])}))
    if want("sweep"):
        progress("sweep throughput: 4 tiny runs under serial, process and a local Ray cluster (bench_sweep.py)")
        try:
            from bench_sweep import sweep_rows
        except ImportError as e:  # ray is in the pinned set; a trimmed install may lack it
            progress(f"sweep section skipped: {e}")
        else:
            for r in sweep_rows(quick=args.quick, threads=args.threads):  # raises if the records differ
                target = r.get("target")
                rows.append(Row(**{**r, "target": Target(*target) if target else None}))
    elapsed = time.perf_counter() - started
    progress("done")

    info = {**machine_info(), "matmul_peak_gflops": round(peak["gflops"], 1)}
    notes = [
        f"policy: {source}",
        f"mode: {'quick' if args.quick else 'full'}, total {elapsed:.1f}s",
        f"peak: torch.mm float32 {PEAK_SIZE}x{PEAK_SIZE}, best of {peak['repeats']}: {peak['gflops']:.1f} GFLOP/s "
        f"per {peak['clock']} (median {peak['median_gflops']:.1f}; per wall second {peak['wall_gflops']:.1f}); "
        "'of peak' = achieved / best",
    ]
    use_rich = not args.markdown
    if use_rich:
        try:
            import rich  # noqa: F401
        except ImportError:
            use_rich = False
    (print_rich if use_rich else print_markdown)(rows, info, notes)

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "mode": "quick" if args.quick else "full",
            "policy": source,
            "machine": info,
            "settings": asdict(settings),
            "elapsed_s": elapsed,
            "rows": [row.to_json() for row in rows],
            "probes": probe_result,
            "matmul_peak": peak,
            "app": app_result,
            "patching": patching_result,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if probe_result is not None and not all(r["ok"] for r in probe_result):
        print("logistic probes disagree with scikit-learn on held-out AUROC by more than 0.01", file=sys.stderr)
        return 1
    if patching_result is not None and not patching_result["ok"]:
        print(f"patching results disagree with TransformerLens: {patching_result['max_abs_diff']:.2e}", file=sys.stderr)
        return 1
    return 0  # performance is informational: never fail the run on a missed target


if __name__ == "__main__":
    sys.exit(main())
