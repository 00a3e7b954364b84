"""Prompt-based activation collection (`collect_prompts`) on a tiny random HookedTransformer: rows match
TransformerLens's own cache at the chosen positions, labels carry prompt/position, disk equals memory, and bad
input is refused before the model runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from workbench.activations import ActivationDataset, collect_prompts
from workbench.errors import WorkbenchError

RESID = "blocks.0.hook_resid_post"
Z = "blocks.1.attn.hook_z"  # (B, T, n_heads, d_head): rows keep the per-position (n_heads, d_head) shape
HOOKS = [RESID, Z]
LENGTHS = [3, 8, 1, 5, 6, 2, 8]
WIDTH = 10  # wider than the longest prompt: trailing padding is dropped before the forward pass


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, d_head=8, n_heads=2, d_mlp=32, d_vocab=30, n_ctx=12, act_fn="relu"
    )
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def prompts() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Right-padded (N, WIDTH) tokens, their lengths, and the same prompts as a list of 1-D tensors."""
    gen = torch.Generator().manual_seed(1)
    tokens = torch.zeros((len(LENGTHS), WIDTH), dtype=torch.long)
    for i, k in enumerate(LENGTHS):
        tokens[i, :k] = torch.randint(1, 30, (k,), generator=gen)
    lengths = torch.tensor(LENGTHS)
    return tokens, lengths, [tokens[i, :k].clone() for i, k in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def reference(model: HookedTransformer, prompts) -> dict[str, torch.Tensor]:
    tokens, _, _ = prompts
    _, cache = model.run_with_cache(tokens)
    return {h: cache[h] for h in HOOKS}


def _labels(n: int = len(LENGTHS)) -> pd.DataFrame:
    # a non-default index: labels are aligned by row order, not by index
    return pd.DataFrame({"y": np.arange(n) * 10, "name": [f"p{i}" for i in range(n)]}, index=np.arange(n) + 100)


def _assert_same(a: ActivationDataset, b: ActivationDataset) -> None:
    assert a.hooks == b.hooks and len(a) == len(b)
    for h in a.hooks:
        assert torch.equal(a[h], b[h]), h
    pd.testing.assert_frame_equal(a.labels, b.labels)


def test_last_position_matches_transformer_lens(model, prompts, reference) -> None:
    tokens, lengths, _ = prompts
    ds = collect_prompts(model, tokens, _labels(), HOOKS, batch_size=3, progress=False, lengths=lengths)
    n = len(LENGTHS)
    assert len(ds) == n and ds.shapes == {RESID: (16,), Z: (2, 8)}
    last = torch.tensor(LENGTHS) - 1
    for h in HOOKS:
        torch.testing.assert_close(ds[h], reference[h][torch.arange(n), last])
        for i, k in enumerate(LENGTHS):
            torch.testing.assert_close(ds[h][i], model.run_with_cache(tokens)[1][h][i, k - 1])
    assert list(ds.labels.columns) == ["y", "name", "prompt", "position"]
    assert ds.label("y").tolist() == [10 * i for i in range(n)]
    assert ds.label("prompt").tolist() == list(range(n))
    assert ds.label("position").tolist() == [k - 1 for k in LENGTHS]
    assert ds.meta["source"]["kind"] == "prompts"


def test_list_of_prompts_equals_padded_tensor(model, prompts) -> None:
    tokens, lengths, as_list = prompts
    padded = collect_prompts(model, tokens, _labels(), HOOKS, positions="all", progress=False, lengths=lengths)
    listed = collect_prompts(model, as_list, _labels(), HOOKS, positions="all", progress=False)
    _assert_same(padded, listed)


def test_all_positions_one_row_per_real_token(model, prompts, reference) -> None:
    tokens, lengths, _ = prompts
    ds = collect_prompts(
        model, tokens, _labels(), HOOKS, positions="all", batch_size=2, progress=False, lengths=lengths
    )
    assert len(ds) == sum(LENGTHS)
    want_prompt = np.repeat(np.arange(len(LENGTHS)), LENGTHS)
    want_pos = np.concatenate([np.arange(k) for k in LENGTHS])
    np.testing.assert_array_equal(ds.label("prompt"), want_prompt)
    np.testing.assert_array_equal(ds.label("position"), want_pos)
    np.testing.assert_array_equal(ds.label("y"), want_prompt * 10)
    assert ds.label("name").tolist() == [f"p{i}" for i in want_prompt]
    for h in HOOKS:
        torch.testing.assert_close(ds[h], reference[h][torch.as_tensor(want_prompt), torch.as_tensor(want_pos)])


@pytest.mark.parametrize("position", [0, 1, -1, -2])
def test_int_positions_count_back_from_each_last_token(model, prompts, reference, position) -> None:
    tokens, lengths, _ = prompts
    keep = [i for i, k in enumerate(LENGTHS) if k >= 2]  # every prompt must contain the position
    ds = collect_prompts(
        model, tokens[keep], None, HOOKS, positions=position, batch_size=4, progress=False, lengths=lengths[keep]
    )
    lens = np.array(LENGTHS)[keep]
    want = lens + position if position < 0 else np.full(len(keep), position)
    assert ds.label("prompt").tolist() == list(range(len(keep)))
    np.testing.assert_array_equal(ds.label("position"), want)
    for h in HOOKS:
        torch.testing.assert_close(ds[h], reference[h][torch.tensor(keep), torch.as_tensor(want)])
    if position == -1:
        last = collect_prompts(model, tokens[keep], None, HOOKS, progress=False, lengths=lengths[keep])
        _assert_same(ds, last)


def test_int_position_outside_a_prompt_is_refused(model, prompts) -> None:
    tokens, lengths, _ = prompts
    with pytest.raises(WorkbenchError, match=r"position 1 is outside prompt 2 \(length 1\)"):
        collect_prompts(model, tokens, None, HOOKS, positions=1, progress=False, lengths=lengths)
    with pytest.raises(WorkbenchError, match=r"position -4 is outside prompt 0 \(length 3\)"):
        collect_prompts(model, tokens, None, HOOKS, positions=-4, progress=False, lengths=lengths)
    with pytest.raises(WorkbenchError, match="unknown positions 'first'"):
        collect_prompts(model, tokens, None, HOOKS, positions="first", progress=False, lengths=lengths)


@pytest.mark.parametrize("positions", ["last", "all"])
def test_disk_roundtrip_equals_memory_and_is_deterministic(model, prompts, tmp_path: Path, positions) -> None:
    tokens, lengths, _ = prompts
    kw = {"positions": positions, "batch_size": 3, "seed": 7, "progress": False, "lengths": lengths}
    mem = collect_prompts(model, tokens, _labels(), HOOKS, **kw)
    disk = collect_prompts(model, tokens, _labels(), HOOKS, out=tmp_path / "ds", shard_size=5, **kw)
    assert disk.path == tmp_path / "ds" and len(disk.meta["shards"]) == -(-len(mem) // 5)
    _assert_same(mem, disk)
    _assert_same(mem, ActivationDataset.load(tmp_path / "ds"))
    _assert_same(mem, collect_prompts(model, tokens, _labels(), HOOKS, **kw))  # same arguments, same dataset
    assert disk.meta["seed"] == 7 and disk.meta["source"]["positions"] == positions
    # another batch size changes only float rounding (BLAS shapes), not which rows or labels come out
    other = collect_prompts(model, tokens, _labels(), HOOKS, **{**kw, "batch_size": len(LENGTHS)})
    pd.testing.assert_frame_equal(other.labels, mem.labels)
    for h in HOOKS:
        torch.testing.assert_close(other[h], mem[h])


def test_bad_input_is_refused_before_the_model_runs(model, prompts, tmp_path: Path) -> None:
    tokens, lengths, as_list = prompts
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    out = tmp_path / "never"
    try:
        with pytest.raises(WorkbenchError, match=r"^7 prompts but 3 labels$"):
            collect_prompts(model, tokens, {"y": [1, 2, 3]}, HOOKS, out=out, progress=False, lengths=lengths)
        with pytest.raises(WorkbenchError, match=r"^7 prompts but 8 labels$"):
            collect_prompts(model, as_list, _labels(8), HOOKS, out=out, progress=False)
        too_long = [*as_list[:2], torch.ones(13, dtype=torch.long), *as_list[2:]]
        with pytest.raises(WorkbenchError, match=r"^prompt 2 has 13 tokens but the model's n_ctx is 12$"):
            collect_prompts(model, too_long, None, HOOKS, out=out, progress=False)
        with pytest.raises(WorkbenchError, match=r"^unknown hook 'blocks\.0\.hook_resid_pst'; did you mean: "):
            collect_prompts(model, tokens, None, [RESID, "blocks.0.hook_resid_pst"], out=out, lengths=lengths)
        with pytest.raises(WorkbenchError, match="prompt 1 has token id 30, outside the vocabulary"):
            collect_prompts(model, [as_list[0], torch.tensor([1, 30])], None, HOOKS, out=out, progress=False)
        with pytest.raises(WorkbenchError, match="prompt 2 has length 0"):
            collect_prompts(model, tokens, None, HOOKS, out=out, progress=False, lengths=lengths * (lengths != 1))
        with pytest.raises(WorkbenchError, match="label column 'prompt' is reserved"):
            collect_prompts(model, tokens, {"prompt": range(7)}, HOOKS, out=out, progress=False, lengths=lengths)
    finally:
        handle.remove()
    assert calls == [] and not out.exists()


def test_hook_without_position_axis_is_refused_and_nothing_is_written(model, prompts, tmp_path: Path) -> None:
    tokens, lengths, _ = prompts
    out = tmp_path / "pattern"  # attention patterns are (B, n_heads, T, T): no per-position row
    with pytest.raises(WorkbenchError, match="blocks.0.attn.hook_pattern' output has shape"):
        collect_prompts(model, tokens, None, ["blocks.0.attn.hook_pattern"], out=out, progress=False, lengths=lengths)
    assert not out.exists()
