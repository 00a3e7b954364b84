"""Labelled activation datasets: maze collection (labels vs the env's ground truth, outcomes vs run_episodes),
the sharded on-disk format (roundtrip, validation naming the bad file, atomic writes) and the in-memory API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import workbench.rl.collect as act_mod  # the collectors (formerly in workbench.activations)
from workbench.activations import ActivationDataset, ShardWriter, collect_arrays, collect_maze, shard_name
from workbench.errors import WorkbenchError
from workbench.hooks import run_with_cache
from workbench.rl.agent import Agent, load_agent
from workbench.rl.envs.maze import decision_squares, distances_to, observe
from workbench.rl.rollout import levels_for, run_episodes

SPATIAL = "embedder.block1.res1.resadd_out"
FC = "embedder.fc"
HOOKS = [SPATIAL, FC]
EPISODES = 12


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny net's convs are too small to gain from intra-op threads, and on a busy machine waiting for a second
    thread costs seconds per rollout; restored afterwards so other test modules are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def agent(registry: Path) -> Agent:
    return load_agent("tiny-maze")


def _assert_same(a: ActivationDataset, b: ActivationDataset) -> None:
    assert a.hooks == b.hooks and len(a) == len(b)
    for h in a.hooks:
        assert a[h].dtype == b[h].dtype == torch.float32
        assert torch.equal(a[h], b[h]), h
    pd.testing.assert_frame_equal(a.labels, b.labels)


def _small(n: int = 12) -> ActivationDataset:
    gen = torch.Generator().manual_seed(0)
    acts = {"a": torch.arange(n * 6, dtype=torch.float32).reshape(n, 2, 3), "b": torch.randn(n, 4, generator=gen)}
    labels = {"i": np.arange(n), "even": np.arange(n) % 2 == 0, "name": [f"r{i}" for i in range(n)]}
    return collect_arrays(acts, labels, source="unit test", seed=3)


# ------------------------------------------------------------------------------------------------------ collection
def test_start_dataset_shapes_and_ground_truth_labels(agent: Agent) -> None:
    ds = collect_maze(agent, HOOKS, episodes=EPISODES, seed=0, progress=False)
    cfg = agent.env_config
    levels = levels_for("ood", EPISODES, 0, cfg)
    w = levels.world_size
    assert len(ds) == EPISODES and ds.hooks == HOOKS
    assert ds[SPATIAL].shape == (EPISODES, 4, w, w) and ds[FC].shape == (EPISODES, 16)
    assert ds[SPATIAL].dtype == torch.float32
    # The activations are exactly what the policy computes on the start observations.
    obs = observe(levels)
    _, cache = run_with_cache(agent.policy, torch.as_tensor(obs), names_filter=HOOKS)
    for h in HOOKS:
        torch.testing.assert_close(ds[h], cache[h])
    lab = ds.labels
    assert (lab["episode"].to_numpy() == np.arange(EPISODES)).all()
    assert (lab["step"] == 0).all() and (lab["split"] == "ood").all()
    assert (ds.label("level_seed") == levels.seeds).all()
    # cheese_cell is the argmax of the observation's cheese channel.
    assert (ds.label("cheese_cell") == obs[:, 2].reshape(EPISODES, -1).argmax(1)).all()
    assert (ds.label("cheese_cell") == ds.label("cheese_row") * w + ds.label("cheese_col")).all()
    start = levels.start()
    assert (ds.label("mouse_row") == start[:, 0]).all() and (ds.label("mouse_col") == start[:, 1]).all()
    assert (ds.label("cheese_dx") == ds.label("cheese_col") - start[:, 1]).all()
    assert (ds.label("cheese_dy") == ds.label("cheese_row") - start[:, 0]).all()
    rows = np.arange(EPISODES)
    d_cheese = distances_to(levels, levels.cheese)[rows, start[:, 0], start[:, 1]]
    d_corner = distances_to(levels, levels.corner())[rows, start[:, 0], start[:, 1]]
    assert (ds.label("dist_to_cheese") == d_cheese).all() and (d_cheese > 0).all()
    assert (ds.label("dist_to_corner") == d_corner).all()
    assert (ds.label("cheese_in_region") == levels.in_region(levels.cheese)).all()
    assert (ds.label("maze_size") == levels.size).all()
    # Outcomes come from run_episodes with the same seed.
    rec = run_episodes(agent.policy, levels, cfg, seed=0)
    assert (ds.label("outcome_cheese") == rec.cheese_reached).all()
    assert (ds.label("outcome_corner_first") == rec.corner_first).all()
    assert (ds.label("outcome_length") == rec.length).all()
    assert "N=12" in repr(ds) and SPATIAL in repr(ds) and "(4, 15, 15)" in repr(ds) and "dist_to_cheese" in repr(ds)


@pytest.mark.parametrize("cap", [None, 7])
def test_rollout_rows_steps_and_outcomes_match_run_episodes(agent: Agent, cap: int | None) -> None:
    cfg = agent.env_config
    ds = collect_maze(
        agent, HOOKS, episodes=EPISODES, seed=0, states="rollout", max_states_per_episode=cap, progress=False
    )
    levels = levels_for("ood", EPISODES, 0, cfg)
    rec = run_episodes(agent.policy, levels, cfg, seed=0)
    limit = cfg.max_steps if cap is None else cap
    assert len(set(rec.length.tolist())) > 1  # some episodes end early: the row count below has teeth
    assert len(ds) == int(np.minimum(rec.length, limit).sum())
    lab = ds.labels
    dist = distances_to(levels, levels.cheese)
    for ep, group in lab.groupby("episode", sort=True):
        steps = group["step"].to_numpy()
        assert (steps == np.arange(min(rec.length[ep], limit))).all()  # 0, 1, 2, ... in row order
        assert (group["outcome_cheese"] == rec.cheese_reached[ep]).all()
        assert (group["outcome_corner_first"] == rec.corner_first[ep]).all()
        assert (group["outcome_length"] == rec.length[ep]).all()
        assert (group["level_seed"] == levels.seeds[ep]).all()
        mouse = group[["mouse_row", "mouse_col"]].to_numpy()
        assert (np.abs(np.diff(mouse, axis=0)).sum(1) <= 1).all()  # one move (or a bump) per step
        assert (group["dist_to_cheese"].to_numpy() == dist[ep, mouse[:, 0], mouse[:, 1]]).all()
    assert sorted(lab["episode"].unique()) == list(range(EPISODES))
    assert (ds.label("dist_to_cheese") > 0).all()  # the terminal (cheese) state is never a row
    decision = decision_squares(levels)[ds.label("episode")]  # the maze's decision square, from the start
    assert (ds.label("decision_row") == decision[:, 0]).all() and (ds.label("decision_col") == decision[:, 1]).all()
    mouse = np.stack([ds.label("mouse_row"), ds.label("mouse_col")], axis=1)
    at = (decision[:, 0] >= 0) & (mouse == decision).all(1)
    assert (ds.label("at_decision_square") == at).all()
    if cap is not None:  # step-0 rows are the start states
        start = collect_maze(agent, HOOKS, episodes=EPISODES, seed=0, progress=False)
        _assert_same(ds.select(ds.label("step") == 0), start)


def test_same_seed_same_dataset_and_batching_does_not_matter(agent: Agent) -> None:
    kw = dict(episodes=EPISODES, seed=5, states="rollout", max_states_per_episode=10, progress=False)
    a = collect_maze(agent, HOOKS, **kw)
    _assert_same(a, collect_maze(agent, HOOKS, **kw))
    # The forward pass in chunks of 5 levels samples the same actions (one multinomial over all levels per step).
    chunked = collect_maze(agent, HOOKS, batch_size=5, **kw)
    pd.testing.assert_frame_equal(a.labels, chunked.labels)
    for h in HOOKS:
        torch.testing.assert_close(a[h], chunked[h])


def test_collect_validates_hooks_split_and_states(agent: Agent, tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="did you mean: embedder.block1.res1.resadd_out"):
        collect_maze(agent, ["embedder.block1.res1.resadd_ou"], episodes=2, progress=False, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(WorkbenchError, match="unknown split 'odd'"):
        collect_maze(agent, HOOKS, split="odd", episodes=2, progress=False)
    with pytest.raises(WorkbenchError, match="unknown states 'rollouts'.*rollout"):
        collect_maze(agent, HOOKS, states="rollouts", episodes=2, progress=False)
    with pytest.raises(WorkbenchError, match="listed twice"):
        collect_maze(agent, [FC, FC], episodes=2, progress=False)
    ds = collect_maze(agent, FC, split="train", episodes=3, progress=False)  # one hook as a plain string
    assert ds.hooks == [FC] and (ds.label("cheese_in_region")).all()


# ------------------------------------------------------------------------------------------------------------- disk
def test_save_load_roundtrip_multiple_shards(agent: Agent, tmp_path: Path) -> None:
    ds = collect_maze(agent, HOOKS, episodes=EPISODES, seed=0, progress=False)
    folder = ds.save(tmp_path / "start", shard_size=5)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["labels.parquet", "meta.json", shard_name(0), shard_name(1), shard_name(2)]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n"] == EPISODES and meta["hooks"] == HOOKS and meta["dtype"] == "float32"
    assert meta["shapes"][SPATIAL] == [4, 15, 15] and [s["rows"] for s in meta["shards"]] == [5, 5, 2]
    assert meta["seed"] == 0 and meta["source"]["agent"] == "tiny-maze" and meta["format_version"] == 1
    loaded = ActivationDataset.load(folder)
    assert loaded.path == folder and loaded.shapes == ds.shapes
    _assert_same(loaded, ds)
    # Streaming straight to disk gives the same dataset as collecting in memory.
    streamed = collect_maze(agent, HOOKS, episodes=EPISODES, seed=0, progress=False, out=tmp_path / "s", shard_size=5)
    _assert_same(streamed, ds)
    # Re-saving a loaded dataset (lazy, read shard by shard), also over itself.
    again = ActivationDataset.load(ActivationDataset.load(folder).save(tmp_path / "copy", shard_size=7))
    _assert_same(again, ds)
    loaded.save(folder, shard_size=3)
    _assert_same(ActivationDataset.load(folder), ds)


def test_shard_writer_flushes_every_shard_size_rows(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    with ShardWriter(folder, ["a"], shard_size=5, source="unit") as w:
        sizes = [3, 4, 6, 0, 2]
        start = 0
        for k in sizes:
            w.add(
                {"a": torch.arange(start, start + k, dtype=torch.float32)[:, None]}, {"i": np.arange(start, start + k)}
            )
            start += k
            assert w._buffered < 5  # bounded: never more than a shard buffered
        assert not folder.exists()  # nothing at the destination before close
        ds = w.close(extra_labels={"twice": 2 * np.arange(start)})
    meta = json.loads((folder / "meta.json").read_text())
    assert [s["rows"] for s in meta["shards"]] == [5, 5, 5]
    assert torch.equal(ds["a"][:, 0], torch.arange(15, dtype=torch.float32))
    assert (ds.label("i") == np.arange(15)).all() and (ds.label("twice") == 2 * np.arange(15)).all()
    with pytest.raises(WorkbenchError, match="already closed"):
        w.add({"a": torch.zeros(1, 1)}, {"i": [0]})


def test_missing_or_corrupt_shard_names_the_file(tmp_path: Path) -> None:
    ds = _small()
    good = ds.save(tmp_path / "good", shard_size=5)

    def copy(name: str) -> Path:
        folder = ActivationDataset.load(good).save(tmp_path / name, shard_size=5)
        return folder

    missing = copy("missing")
    (missing / shard_name(1)).unlink()
    with pytest.raises(WorkbenchError, match=r"missing/shard-00001\.safetensors: shard missing"):
        ActivationDataset.load(missing)

    corrupt = copy("corrupt")
    (corrupt / shard_name(2)).write_bytes(b"\x00garbage" * 3)
    with pytest.raises(WorkbenchError, match=r"corrupt/shard-00002\.safetensors: unreadable shard"):
        ActivationDataset.load(corrupt)

    truncated = copy("truncated")
    data = (truncated / shard_name(0)).read_bytes()
    (truncated / shard_name(0)).write_bytes(data[:-8])
    with pytest.raises(WorkbenchError, match=r"truncated/shard-00000\.safetensors"):
        ActivationDataset.load(truncated)

    short = copy("short")
    save_file({"a": torch.zeros(4, 2, 3), "b": torch.zeros(4, 4)}, str(short / shard_name(1)))
    with pytest.raises(
        WorkbenchError, match=r"short/shard-00001\.safetensors: hook 'a' has 4 rows but meta.json says 5"
    ):
        ActivationDataset.load(short)

    labels = copy("labels")
    pd.DataFrame({"i": np.arange(3)}).to_parquet(labels / "labels.parquet", index=False)
    with pytest.raises(WorkbenchError, match=r"labels/labels\.parquet: 3 labels but 12 activation rows"):
        ActivationDataset.load(labels)

    # A shard that disappears after loading is reported on first access, still naming the file.
    lazy = ActivationDataset.load(copy("lazy"))
    (tmp_path / "lazy" / shard_name(0)).unlink()
    with pytest.raises(WorkbenchError, match=r"lazy/shard-00000\.safetensors"):
        lazy["a"]

    with pytest.raises(WorkbenchError, match="not an activation dataset"):
        ActivationDataset.load(tmp_path)
    meta = json.loads((good / "meta.json").read_text())
    (good / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(WorkbenchError, match="format version 99"):
        ActivationDataset.load(good)


def test_failure_mid_write_leaves_no_folder(agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "out"
    root.mkdir()
    folder = root / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(folder, ["a"], shard_size=2) as w:
            for i in range(5):
                w.add({"a": torch.zeros(1, 3)}, {"i": [i]})
            raise RuntimeError("boom")
    assert list(root.iterdir()) == []  # neither the folder nor its temporary sibling

    # Collection that fails after some shards were flushed: nothing left behind, an existing dataset untouched.
    existing = _small().save(folder)
    before = sorted(p.name for p in folder.iterdir())
    real = act_mod.run_with_cache
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(act_mod, "run_with_cache", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        collect_maze(agent, HOOKS, episodes=EPISODES, states="rollout", shard_size=5, out=folder, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["ds"]
    assert sorted(p.name for p in folder.iterdir()) == before
    _assert_same(ActivationDataset.load(existing), _small())

    with pytest.raises(WorkbenchError, match="not an activation dataset; refusing"):
        ShardWriter(tmp_path, ["a"])


# --------------------------------------------------------------------------------------------------- in-memory API
def test_label_mismatch_and_bad_arrays() -> None:
    with pytest.raises(WorkbenchError, match="5 activations but 4 labels"):
        ActivationDataset({"a": torch.zeros(5, 3)}, {"x": np.arange(4)})
    with pytest.raises(WorkbenchError, match="5 activations but 6 labels"):
        collect_arrays({"a": torch.zeros(5, 3)}, pd.DataFrame({"x": np.arange(6)}))
    with pytest.raises(WorkbenchError, match="hook 'b' has 4 rows but hook 'a' has 5"):
        collect_arrays({"a": torch.zeros(5, 3), "b": torch.zeros(4, 3)}, None)
    with pytest.raises(WorkbenchError, match="at least one hook"):
        collect_arrays({}, None)


def test_shard_writer_rejects_bad_rows_without_changing_state(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "w", ["a", "b"], shard_size=4) as w:
        w.add({"a": torch.zeros(2, 3), "b": torch.zeros(2)}, {"x": [0, 1]})
        with pytest.raises(WorkbenchError, match="missing \\['b'\\]"):
            w.add({"a": torch.zeros(2, 3)}, {"x": [0, 1]})
        with pytest.raises(WorkbenchError, match="rows have shape \\(4,\\) but earlier rows had \\(3,\\)"):
            w.add({"a": torch.zeros(2, 4), "b": torch.zeros(2)}, {"x": [0, 1]})
        with pytest.raises(WorkbenchError, match="2 activations but 3 labels"):
            w.add({"a": torch.zeros(2, 3), "b": torch.zeros(2)}, {"x": [0, 1, 2]})
        with pytest.raises(WorkbenchError, match="label columns"):
            w.add({"a": torch.zeros(2, 3), "b": torch.zeros(2)}, {"y": [0, 1]})
        ds = w.close()
    assert len(ds) == 2 and ds.shapes == {"a": (3,), "b": ()}


def test_select_label_and_collect_arrays(tmp_path: Path) -> None:
    ds = _small()
    assert len(ds) == 12 and ds.hooks == ["a", "b"] and ds.meta["seed"] == 3
    even = ds.select(ds.label("even"))
    assert len(even) == 6 and torch.equal(even["a"], ds["a"][::2])
    assert (even.label("i") == np.arange(0, 12, 2)).all() and list(even.labels.index) == list(range(6))
    picked = ds.select([3, -1])
    assert (picked.label("i") == [3, 11]).all() and torch.equal(picked["b"], ds["b"][[3, 11]])
    assert (ds.select(slice(2, 5)).label("i") == [2, 3, 4]).all()
    assert (ds.select(torch.tensor([1])).label("i") == [1]).all() and len(ds.select(7)) == 1
    assert len(ds.select(np.zeros(0, dtype=np.int64))) == 0
    with pytest.raises(WorkbenchError, match="boolean mask has shape"):
        ds.select(np.ones(5, dtype=bool))
    with pytest.raises(WorkbenchError, match="out of range"):
        ds.select([12])
    with pytest.raises(WorkbenchError, match="unknown label 'evn'; did you mean: even"):
        ds.label("evn")
    with pytest.raises(WorkbenchError, match="unknown hook 'c'"):
        ds["c"]
    # A selection of a lazily loaded dataset saves and loads like any other.
    loaded = ActivationDataset.load(ds.save(tmp_path / "d", shard_size=4))
    sub = loaded.select(loaded.label("i") > 8)
    _assert_same(ActivationDataset.load(sub.save(tmp_path / "sub")), ds.select(slice(9, None)))
    text = repr(loaded)
    assert "N=12" in text and "unit test" in text and "(2, 3)" in text and "labels (3): i, even, name" in text
