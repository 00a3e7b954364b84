"""Batched patching sweeps agree with TransformerLens's own (one forward per index) patching functions.

Why compare against `transformer_lens.patching`: it is the reference implementation the field uses; our sweep
batches variants, restarts at the patched block and unembeds one position, and each of those shortcuts must be exact.
TL's functions patch the run on `corrupted_tokens` with activations from `clean_cache` (denoising); passing the
clean tokens and a corrupted cache gives noising.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import transformer_lens.patching as tlp
from transformer_lens import HookedTransformer, HookedTransformerConfig

from workbench.errors import WorkbenchError
from workbench.patching import logit_diff, patch_block_every, patch_sweep, results_frame

N, T, VOCAB = 6, 8, 50
ATOL = 1e-5


def tiny_model(**overrides) -> HookedTransformer:
    kwargs = dict(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=VOCAB, n_ctx=16, act_fn="gelu",
        normalization_type="LN", seed=0, initializer_range=0.1,
    )  # fmt: skip
    kwargs.update(overrides)
    return HookedTransformer(HookedTransformerConfig(**kwargs)).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, two threads of many tiny forwards spin far slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return tiny_model()


def make_pairs(model: HookedTransformer, seed: int = 1):
    """Clean/corrupt pairs that differ at two positions; answer = clean argmax, wrong = corrupt argmax at the end.

    Choosing the answers from the model's own predictions makes the clean - corrupt gap large, so the normalised
    effect is well conditioned even on a random model.
    """
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, VOCAB, (N, T), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = torch.randint(0, VOCAB, (N,), generator=g)
    corrupt[:, 5] = torch.randint(0, VOCAB, (N,), generator=g)
    with torch.no_grad():
        answer = model(clean)[:, -1].argmax(-1)
        wrong = model(corrupt)[:, -1].argmax(-1)
    wrong = torch.where(wrong == answer, (answer + 1) % VOCAB, wrong)
    return clean, corrupt, answer, wrong


def tl_metric(model, clean, corrupt, answer, wrong, pos=None):
    """TL-style metric (logits (N, T, V) -> scalar): normalised mean logit difference, clean = 1, corrupt = 0."""
    rows = torch.arange(clean.shape[0])
    p = torch.full((clean.shape[0],), clean.shape[1] - 1) if pos is None else pos

    def ld(logits):
        return logits[rows, p, answer] - logits[rows, p, wrong]

    with torch.no_grad():
        cl, co = ld(model(clean)).mean(), ld(model(corrupt)).mean()
    return lambda logits: (ld(logits).mean() - co) / (cl - co)


def tl_reference(model, fn, base_tokens, donor_tokens, metric):
    with torch.no_grad():
        _, cache = model.run_with_cache(donor_tokens)
        return fn(model, base_tokens, cache, metric)


TL_RESID_POST = partial(
    tlp.generic_activation_patch,
    patch_setter=tlp.layer_pos_patch_setter,
    activation_name="resid_post",
    index_axis_names=("layer", "pos"),
)
WHOLE_LAYER = partial(  # TL has no whole-layer patch function; patch every position via the explicit index trick
    tlp.generic_activation_patch,
    patch_setter=lambda act, index, clean: clean.clone(),
    index_axis_names=("layer",),
)

CASES = [  # (activation, per, TransformerLens function)
    ("resid_pre", "pos", tlp.get_act_patch_resid_pre),
    ("resid_mid", "pos", tlp.get_act_patch_resid_mid),
    ("resid_post", "pos", TL_RESID_POST),
    ("attn_out", "pos", tlp.get_act_patch_attn_out),
    ("mlp_out", "pos", tlp.get_act_patch_mlp_out),
    ("z", "head", tlp.get_act_patch_attn_head_out_all_pos),
    ("z", "head_pos", tlp.get_act_patch_attn_head_out_by_pos),
    ("mlp_out", "layer", partial(WHOLE_LAYER, activation_name="mlp_out")),
]


@pytest.mark.parametrize("mode", ["denoising", "noising"])
@pytest.mark.parametrize(("activation", "per", "tl_fn"), CASES, ids=[f"{a}-{p}" for a, p, _ in CASES])
def test_matches_transformer_lens(model, mode, activation, per, tl_fn):
    clean, corrupt, answer, wrong = make_pairs(model)
    metric = tl_metric(model, clean, corrupt, answer, wrong)
    base, donor = (corrupt, clean) if mode == "denoising" else (clean, corrupt)
    ref = tl_reference(model, tl_fn, base, donor, metric)
    ours = patch_sweep(
        model, clean, corrupt, activation, per=per, mode=mode, answer_tokens=answer, wrong_tokens=wrong, max_batch=20
    )
    assert ours.effect.shape == ref.shape
    assert torch.allclose(ours.effect, ref.float(), atol=ATOL, rtol=0), (ours.effect - ref).abs().max()
    assert ref.abs().max() > 0.05  # the sweep finds something on this model, so agreement is informative
    raw = tl_reference(model, tl_fn, base, donor, tl_raw_metric(answer, wrong))
    assert torch.allclose(ours.per_pair.double().mean(-1), raw.double(), atol=ATOL, rtol=0)


def tl_raw_metric(answer, wrong):
    """TL-style raw metric: mean logit difference at the last position (no normalisation, so no conditioning)."""
    rows = torch.arange(answer.shape[0])
    return lambda logits: (logits[rows, -1, answer] - logits[rows, -1, wrong]).mean()


@pytest.mark.parametrize(
    "overrides",
    [
        {"positional_embedding_type": "rotary", "rotary_dim": 8},
        {"positional_embedding_type": "shortformer"},
        {"normalization_type": "RMS", "n_layers": 3},
        {"attn_only": True, "normalization_type": None, "initializer_range": 0.25},
    ],
    ids=["rotary", "shortformer", "rms-3layers", "attn-only-no-norm"],
)
def test_other_architectures_match(overrides):
    """Restarting at a block must work for every positional-embedding and normalisation scheme.

    Compared on the raw mean logit difference: on some random models the clean - corrupt gap is tiny, and the
    normalised effect would amplify float32 rounding by 1 / gap.
    """
    m = tiny_model(**overrides)
    clean, corrupt, answer, wrong = make_pairs(m)
    for activation, per, fn in [("resid_pre", "pos", tlp.get_act_patch_resid_pre), CASES[5]]:
        ref = tl_reference(m, fn, corrupt, clean, tl_raw_metric(answer, wrong))
        ours = patch_sweep(m, clean, corrupt, activation, per=per, answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
        raw = ours.per_pair.double().mean(-1)
        assert torch.allclose(raw, ref.double(), atol=ATOL, rtol=0), (activation, (raw - ref).abs().max())
        assert ref.std() > 1e-3  # patches move the metric, so agreement is informative


def test_per_pair_answer_positions_match(model):
    """Right-padded batches read the answer at lengths - 1; the metric follows each pair's position."""
    clean, corrupt, answer, wrong = make_pairs(model)
    pos = torch.tensor([7, 6, 5, 7, 6, 7])
    metric = tl_metric(model, clean, corrupt, answer, wrong, pos=pos)
    ref = tl_reference(model, tlp.get_act_patch_resid_pre, corrupt, clean, metric)
    ours = patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, answer_pos=pos)
    assert torch.allclose(ours.effect, ref.float(), atol=ATOL, rtol=0)
    # causal model: patching a position after a pair's answer position cannot move that pair's metric
    assert torch.allclose(ours.per_pair[:, 7, 2], ours.corrupt[2].expand(2), atol=1e-5)


def test_chunking_batch_size_and_truncation_do_not_change_results(model):
    clean, corrupt, answer, wrong = make_pairs(model)
    kw = dict(answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
    one = patch_sweep(model, clean, corrupt, "z", per="head_pos", max_batch=1, **kw)  # one row per forward
    big = patch_sweep(model, clean, corrupt, "z", per="head_pos", max_batch=10_000, **kw)
    full = patch_sweep(model, clean, corrupt, "z", per="head_pos", max_batch=10_000, truncate=False, **kw)
    assert {r.notes["engine"] for r in (one, big, full)} == {"lean"}
    computed = one.notes["rows_total"] - one.notes["rows_skipped"]
    assert one.forwards == 2 + computed  # base, donor, then one per computed (variant, pair) row
    # heads at positions < 2 see identical prompts, so those rows are the base run and are not computed
    assert one.notes["rows_skipped"] >= 2 * 2 * 4 * N
    assert not full.notes["truncated"] and big.notes["truncated"] and big.forwards < one.forwards
    assert torch.allclose(one.per_pair, big.per_pair, atol=1e-5)
    assert torch.allclose(full.per_pair, big.per_pair, atol=1e-5)


def test_hook_engine_chunks_and_agrees(model):
    """The TransformerLens-hook path (models the lean forward does not cover) batches variants the same way."""
    clean, corrupt, answer, wrong = make_pairs(model)
    kw = dict(answer_tokens=answer, wrong_tokens=wrong, n_boot=0, engine="hooks")
    one = patch_sweep(model, clean, corrupt, "z", per="head_pos", max_batch=1, **kw)  # one variant per forward
    big = patch_sweep(model, clean, corrupt, "z", per="head_pos", max_batch=10_000, **kw)
    full = patch_sweep(model, clean, corrupt, "z", per="head_pos", max_batch=10_000, truncate=False, **kw)
    assert one.notes["engine"] == "hooks" and one.notes["lean_unused_because"] == "engine='hooks'"
    assert one.forwards == 3 + 2 * T * 4  # base, donor, base keys/values, then one per variant
    assert full.forwards == 2 + 2 and not full.notes["truncated"] and big.notes["truncated"]
    assert big.forwards == 3 + 2 * T  # truncated chunks span at most T // 8 = 1 position: T chunks per layer
    lean = patch_sweep(model, clean, corrupt, "z", per="head_pos", **{**kw, "engine": "lean"})
    for r in (one, full):
        assert torch.allclose(r.per_pair, big.per_pair, atol=1e-5)
    assert torch.allclose(lean.per_pair, big.per_pair, atol=1e-5)


def test_sanity_endpoints(model):
    """Denoising the whole residual stream entering block 0 restores the clean run (1); noising it gives 0."""
    clean, corrupt, answer, wrong = make_pairs(model)
    kw = dict(per="layer", answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
    den = patch_sweep(model, clean, corrupt, "resid_pre", **kw)
    noi = patch_sweep(model, clean, corrupt, "resid_pre", mode="noising", **kw)
    assert torch.allclose(den.effect, torch.ones(2), atol=1e-5)
    assert torch.allclose(noi.effect, torch.zeros(2), atol=1e-5)
    # per position: positions where clean and corrupt tokens agree have no effect at block 0
    pos = patch_sweep(model, clean, corrupt, "resid_pre", answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
    same = [p for p in range(T) if p not in (2, 5)]
    assert torch.all(pos.effect[0, same].abs() < 1e-6)
    assert pos.effect[0, [2, 5]].abs().min() > 1e-3


def test_bootstrap_interval_and_frame(model):
    clean, corrupt, answer, wrong = make_pairs(model)
    a = patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=500, seed=3)
    b = patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=500, seed=3)
    assert torch.equal(a.ci_low, b.ci_low) and torch.equal(a.ci_high, b.ci_high)  # seeded
    assert torch.all(a.ci_low <= a.ci_high)
    informative = a.effect.abs() > 1e-3
    assert torch.any(a.ci_high[informative] > a.ci_low[informative])  # pairs vary, so intervals have width
    df = a.frame()
    assert list(df.columns) == ["activation", "mode", "layer", "pos", "effect", "ci_low", "ci_high", "n"]
    assert len(df) == 2 * T and (df["n"] == N).all()
    row = df[(df.layer == 1) & (df.pos == 5)].iloc[0]
    assert row.effect == pytest.approx(float(a.effect[1, 5]))
    assert a.to_json()["effect"][1][5] == pytest.approx(float(a.effect[1, 5]))
    assert a.top(1).effect.abs().iloc[0] == pytest.approx(float(a.effect.abs().max()))
    # the interval is the percentile bootstrap of the ratio of means over resampled pairs, recomputed by hand
    idx = np.random.default_rng(3).integers(0, N, size=(500, N))
    cl, co, pp = (x.double().numpy()[idx].mean(axis=1) for x in (a.clean, a.corrupt, a.per_pair[1, 5]))
    lo, hi = np.quantile((pp - co) / (cl - co), [0.025, 0.975])
    assert float(a.ci_low[1, 5]) == pytest.approx(lo, abs=1e-5) and float(a.ci_high[1, 5]) == pytest.approx(
        hi, abs=1e-5
    )


def test_block_every_and_layers_subset(model):
    clean, corrupt, answer, wrong = make_pairs(model)
    out = patch_block_every(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
    metric = tl_metric(model, clean, corrupt, answer, wrong)
    ref = tl_reference(model, tlp.get_act_patch_block_every, corrupt, clean, metric)
    ours = torch.stack([out[k].effect for k in ("resid_pre", "attn_out", "mlp_out")])
    assert torch.allclose(ours, ref.float(), atol=ATOL, rtol=0)
    assert len(results_frame(out.values())) == 3 * 2 * T
    sub = patch_sweep(model, clean, corrupt, "attn_out", layers=[1], answer_tokens=answer, wrong_tokens=wrong)
    assert sub.layers == [1] and torch.allclose(sub.effect[0], out["attn_out"].effect[1], atol=1e-6)
    assert set(sub.frame().layer) == {1}


def test_custom_metric(model):
    clean, corrupt, answer, wrong = make_pairs(model)
    ld = logit_diff(answer, wrong)
    a = patch_sweep(model, clean, corrupt, metric=ld, n_boot=0)
    b = patch_sweep(model, clean, corrupt, answer_tokens=answer, wrong_tokens=wrong, n_boot=0)
    assert torch.equal(a.effect, b.effect)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"activation": "resid_pos"}, "unknown activation 'resid_pos'; did you mean"),
        ({"mode": "denoise"}, "unknown mode 'denoise'"),
        ({"per": "head"}, "needs per-head activations"),
        ({"layers": [5]}, "layers must be"),
        ({"answer_tokens": None}, "pass answer_tokens"),
        ({"answer_pos": [1, 2]}, "one position per pair"),
        ({"max_batch": 0}, "max_batch must be"),
    ],
)
def test_bad_input_is_one_line(model, kwargs, match):
    clean, corrupt, answer, wrong = make_pairs(model)
    args = {"answer_tokens": answer, "wrong_tokens": wrong, **kwargs}
    with pytest.raises(WorkbenchError, match=match):
        patch_sweep(model, clean, corrupt, **args)


def test_shape_mismatch_and_identical_prompts(model):
    clean, corrupt, answer, wrong = make_pairs(model)
    with pytest.raises(WorkbenchError, match="same shape"):
        patch_sweep(model, clean, corrupt[:, :-1], answer_tokens=answer, wrong_tokens=wrong)
    with pytest.raises(WorkbenchError, match="same mean metric"):
        patch_sweep(model, clean, clean.clone(), answer_tokens=answer, wrong_tokens=wrong)
    with pytest.raises(WorkbenchError, match="never ran"):  # attn-only models have no mlp_out
        m = tiny_model(attn_only=True)
        c, k, a, w = make_pairs(m)
        patch_sweep(m, c, k, "mlp_out", answer_tokens=a, wrong_tokens=w)


# ------------------------------------------------------------------------------------------------ CLI on persona LM
@pytest.fixture(scope="module")
def tiny_persona_lm(tmp_path_factory):
    """A random-weight LM artifact with the persona corpus's tokenizer (no training: the sweep's plumbing only)."""
    from workbench.lm import corpus
    from workbench.lm.model import build_model, save_lm
    from workbench.lm.tokenizer import WordTokenizer

    tok = WordTokenizer(corpus.vocabulary())
    model_cfg = dict(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=64, d_vocab=tok.vocab_size, act_fn="gelu",
        normalization_type="LN",
    )  # fmt: skip
    model = build_model(model_cfg, seed=0)
    folder = tmp_path_factory.mktemp("lm") / "tiny-persona-lm"
    config = {"kind": "lm", "name": "tiny-persona-lm", "model": model_cfg}
    return save_lm(folder, model, tok, config, card="# tiny\n", metrics={})


def test_persona_pairs_align(tiny_persona_lm):
    from workbench.cli_patch import persona_pairs
    from workbench.lm.model import load_lm

    lm = load_lm(tiny_persona_lm)
    p = persona_pairs(lm, "honest", "sycophant", n=8, seed=0)
    assert p["clean"].shape == p["corrupt"].shape and p["clean"].shape[0] == 8
    differ = (p["clean"] != p["corrupt"]).any(0).nonzero().flatten().tolist()
    assert len(differ) == 1 and p["labels"][differ[0]] == "honest"  # only the persona word differs
    assert p["labels"][differ[0] - 1] == "[" and p["labels"][-2:] == ["assistant", ":"]
    assert (p["answer_pos"] == p["clean"].shape[1] - 1).all()
    assert not torch.equal(p["answer"], p["wrong"]) and (p["answer"] != p["wrong"]).all()
    tok = lm.tokenizer
    assert all(tok.vocab[int(t)].isdigit() for t in torch.cat([p["answer"], p["wrong"]]))


def test_cli_patch_json(cli, tiny_persona_lm):
    import json

    code, out, err = cli("patch", str(tiny_persona_lm), "--n", "8", "--n-boot", "50", "--mode", "denoising", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 8 and set(res["sweeps"]) == {"resid_pre", "attn_out", "mlp_out"}
    grid = torch.tensor(res["sweeps"]["resid_pre"]["effect"])
    assert grid.shape == (2, len(res["positions"]))
    # denoising the persona word's residual at block 0 restores the clean run exactly; no other position moves
    where = res["positions"].index("honest")
    assert grid[0, where].item() == pytest.approx(1.0, abs=1e-4)
    assert grid[0, [p for p in range(grid.shape[1]) if p != where]].abs().max() < 1e-4
    assert len(res["top"]) == 10 and "token" in res["top"][0]


def test_cli_patch_bad_input(cli, tiny_persona_lm):
    code, _, err = cli("patch", str(tiny_persona_lm), "--clean-persona", "honset", "--n", "4")
    assert code == 2 and "unknown persona 'honset'" in err and "honest" in err
    code, _, err = cli("patch", str(tiny_persona_lm), "--mode", "nosing", "--n", "4", "--n-boot", "0")
    assert code == 2 and "unknown mode 'nosing'" in err
