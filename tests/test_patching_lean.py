"""The lean (hook-free) forward behind `patch_sweep` equals TransformerLens's, on other shapes and on the shipped LMs.

Why: the lean forward re-implements the block maths on the model's own parameters (fused q/k/v, fused attention,
the last block at the answer position only) and skips (variant, pair) rows whose patch cannot change anything. Each
of these must be exact, for every config it accepts; configs it does not accept must fall back to TransformerLens's
own forward, and say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformer_lens.patching as tlp
from transformer_lens import HookedTransformer, HookedTransformerConfig

import workbench.patching as patching
from workbench.errors import WorkbenchError
from workbench.patching import lean_unsupported, patch_sweep

ATOL = 1e-5
SHIPPED = Path(__file__).resolve().parents[1] / "artifacts" / "lms"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_with(**overrides) -> HookedTransformer:
    kwargs = dict(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=40, n_ctx=16, act_fn="gelu",
        normalization_type="LN", seed=0, initializer_range=0.1,
    )  # fmt: skip
    kwargs.update(overrides)
    return HookedTransformer(HookedTransformerConfig(**kwargs)).eval()


CONFIGS = {
    "2-heads-of-16": {"n_heads": 2, "d_head": 16},
    "8-heads-of-4-3-layers": {"n_heads": 8, "d_head": 4, "n_layers": 3},
    "d_head-not-d_model/heads": {"n_heads": 3, "d_head": 12},
    "attn-only": {"attn_only": True, "initializer_range": 0.25},
    "attn-only-no-norm": {"attn_only": True, "normalization_type": None, "initializer_range": 0.25},
    "LNPre": {"normalization_type": "LNPre"},
    "RMS-relu": {"normalization_type": "RMS", "act_fn": "relu"},
    "RMSPre-gelu_new": {"normalization_type": "RMSPre", "act_fn": "gelu_new"},
    "silu": {"act_fn": "silu"},
}


def pairs(model: HookedTransformer, n: int = 5, t: int = 9, seed: int = 1):
    """Clean/corrupt pairs differing at positions 3 and 6 (so positions 0-2 are the same prompt in both)."""
    vocab = model.cfg.d_vocab
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, t), generator=g)
    corrupt = clean.clone()
    corrupt[:, 3] = torch.randint(0, vocab, (n,), generator=g)
    corrupt[:, 6] = torch.randint(0, vocab, (n,), generator=g)
    with torch.no_grad():
        answer = model(clean)[:, -1].argmax(-1)
        wrong = model(corrupt)[:, -1].argmax(-1)
    return clean, corrupt, answer, torch.where(wrong == answer, (answer + 1) % vocab, wrong)


def raw_metric(answer, wrong):
    rows = torch.arange(answer.shape[0])
    return lambda logits: (logits[rows, -1, answer] - logits[rows, -1, wrong]).mean()


def tl_sweep(model, fn, base, donor, metric):
    with torch.no_grad():
        _, cache = model.run_with_cache(donor)
        return fn(model, base, cache, metric)


@pytest.mark.parametrize("overrides", list(CONFIGS.values()), ids=list(CONFIGS))
def test_lean_forward_equals_transformer_lens(overrides):
    """Full run and a run restarted mid-prompt from cached keys/values: the model's own logits."""
    model = model_with(**overrides)
    assert lean_unsupported(model) is None
    tokens = pairs(model)[0]
    with torch.no_grad():
        ref = model(tokens)  # (N, T, d_vocab)
        run = patching._embed(model, tokens)
        lean = patching._Lean(model)
        final, acts = lean.run(run.resid0, {"k", "v", "resid_pre"})
        every = torch.arange(tokens.shape[1])
        for t in every.tolist():
            logits = patching._logits_at(model, final, torch.full((tokens.shape[0],), t))
            assert torch.allclose(logits, ref[:, t], atol=ATOL), (t, (logits - ref[:, t]).abs().max())
        p0, at = 4, torch.tensor([4, 2, 0, 4, 3])  # rows read positions 8, 6, 4, 8, 7
        resumed = lean.resume(
            0, "resid_pre", run.resid0[:, p0:], {}, lambda i: (acts["k"][i][:, :p0], acts["v"][i][:, :p0]), p0, at
        )
        logits = patching._logits_at(model, resumed, torch.zeros(5, dtype=torch.long))
        assert torch.allclose(logits, ref[torch.arange(5), at + p0], atol=ATOL)
        assert lean.flops > 0
    assert patching._lean_matches(model, run)


@pytest.mark.parametrize("overrides", list(CONFIGS.values()), ids=list(CONFIGS))
def test_lean_sweeps_match_transformer_lens(overrides):
    """Denoising and noising alternate over configs (tests/test_patching.py runs both on the default one)."""
    model = model_with(**overrides)
    mode = "noising" if list(CONFIGS.values()).index(overrides) % 2 else "denoising"
    clean, corrupt, answer, wrong = pairs(model)
    base, donor = (corrupt, clean) if mode == "denoising" else (clean, corrupt)
    cases = [
        ("resid_pre", "pos", tlp.get_act_patch_resid_pre),
        ("z", "head", tlp.get_act_patch_attn_head_out_all_pos),
        ("z", "head_pos", tlp.get_act_patch_attn_head_out_by_pos),
        ("attn_out", "pos", tlp.get_act_patch_attn_out),
    ]
    if not model.cfg.attn_only:
        cases.append(("mlp_out", "pos", tlp.get_act_patch_mlp_out))
    for activation, per, fn in cases:
        ours = patch_sweep(
            model, clean, corrupt, activation, per=per, mode=mode, answer_tokens=answer, wrong_tokens=wrong, n_boot=0
        )
        assert ours.notes["engine"] == "lean"
        ref = tl_sweep(model, fn, base, donor, raw_metric(answer, wrong))
        raw = ours.per_pair.double().mean(-1)
        assert torch.allclose(raw, ref.double(), atol=ATOL, rtol=0), (activation, per, (raw - ref).abs().max())
        assert ref.std() > 1e-4  # the patches move the metric, so agreement is informative


def test_rows_that_cannot_change_are_skipped_and_exact():
    """Positions 0-2 are the same prompt in clean and corrupt, so patching them is the base run, at every layer."""
    model = model_with()
    clean, corrupt, answer, wrong = pairs(model)
    ours = patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
    n = clean.shape[0]
    # layer 0: only positions 3 and 6 differ; layer 1: positions 0-2 still identical (causal)
    assert ours.notes["rows_skipped"] == (9 - 2) * n + 3 * n
    assert torch.equal(ours.per_pair[:, :3], ours.corrupt.expand(2, 3, n))  # the base metric itself
    hooks = patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=0, engine="hooks")
    assert torch.allclose(ours.per_pair, hooks.per_pair, atol=ATOL)


def test_unsupported_models_fall_back_to_hooks():
    model = model_with(positional_embedding_type="rotary", rotary_dim=8)
    assert lean_unsupported(model) == "positional embedding 'rotary'"
    clean, corrupt, answer, wrong = pairs(model)
    res = patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
    assert res.notes["engine"] == "hooks" and "rotary" in res.notes["lean_unused_because"]
    with pytest.raises(WorkbenchError, match="lean forward cannot run this sweep .*rotary.*engine='hooks'"):
        patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=0, engine="lean")
    with pytest.raises(WorkbenchError, match="unknown engine 'fast'"):
        patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, engine="fast")


def test_auto_falls_back_when_lean_logits_disagree(monkeypatch):
    """The check against the model's own forward catches a lean forward that is wrong for a model."""
    model = model_with()
    clean, corrupt, answer, wrong = pairs(model)
    monkeypatch.setattr(patching, "_norm", lambda x, params: 2 * x)  # a broken normalisation
    res = patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
    assert res.notes["engine"] == "hooks"
    assert res.notes["lean_unused_because"] == "its logits differ from the model's own forward"


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()) if SHIPPED.is_dir() else [])
def test_shipped_lms_run_lean_and_match_transformer_lens(name):
    from workbench.lm.model import load_lm

    model = load_lm(SHIPPED / name).model
    assert lean_unsupported(model) is None
    clean, corrupt, answer, wrong = pairs(model, n=4, t=10)
    for activation, per, fn in [
        ("resid_pre", "pos", tlp.get_act_patch_resid_pre),
        ("z", "head", tlp.get_act_patch_attn_head_out_all_pos),
    ]:
        ours = patch_sweep(
            model, clean, corrupt, activation, per=per, answer_tokens=answer, wrong_tokens=wrong, n_boot=0
        )
        assert ours.notes["engine"] == "lean"
        ref = tl_sweep(model, fn, corrupt, clean, raw_metric(answer, wrong))
        scale = 1.0 + float(ref.abs().max())
        raw = ours.per_pair.double().mean(-1)
        assert torch.allclose(raw, ref.double(), atol=ATOL * scale, rtol=0), (name, activation, (raw - ref).abs().max())
