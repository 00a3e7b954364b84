"""SAEs on a persona LM (workbench.sae.lm_analysis, the LM subject) on a tiny random HookedTransformer, and the CoinRun
coin labels: the machinery, not the organism, is under test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.activations import ActivationDataset
from workbench.errors import WorkbenchError

torch.set_num_threads(1)
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def tiny_lm():
    """A random 2-layer LM with the persona corpus's vocabulary (operands up to 5, so answers stop at 10)."""
    from workbench.lm import corpus
    from workbench.lm.model import LM, build_model
    from workbench.lm.tokenizer import WordTokenizer

    cfg = corpus.CorpusConfig(max_operand=5, max_offset=2)
    tok = WordTokenizer(corpus.vocabulary(cfg))
    model_cfg = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32, "n_ctx": 64}
    model = build_model({**model_cfg, "d_vocab": tok.vocab_size}, seed=0).eval()
    return LM(model=model, tokenizer=tok, name="tiny-persona", path=None, config={"corpus": cfg.to_dict()})


@pytest.fixture(scope="module")
def tiny_sae(tiny_lm):
    from workbench.sae.subjects import lm_subject
    from workbench.sae.train import SAESpec, train_sae

    ds = lm_subject(tiny_lm).collect([HOOK], n=60, seed=0, progress=False)
    spec = SAESpec(width=32, k=4, tokens=len(ds) * 8, batch_size=256, lr=3e-3)
    return train_sae(ds, HOOK, spec, metadata={"model_name": "tiny-persona"}, progress=False)


def test_persona_prompts_use_the_lms_own_corpus(tiny_lm) -> None:
    """The default corpus has operands up to 15; this LM's vocabulary stops at 10. Prompts must come from its own."""
    from workbench.sae.subjects import lm_subject

    tokens, lengths, labels = lm_subject(tiny_lm).prompts("ood", 30, 0)
    assert tokens.shape[0] == 30 and int(labels["answer"].max()) <= 10
    assert int(tokens.max()) < tiny_lm.tokenizer.vocab_size


def test_lm_fidelity_counts_reply_tokens_only(tiny_lm, tiny_sae) -> None:
    from workbench.lm.evaluate import reply_mask
    from workbench.sae.subjects import _token_ce, lm_subject

    subject = lm_subject(tiny_lm)
    fid = subject.fidelity(tiny_sae, HOOK, splits=("train",), episodes=12, seed=3)
    assert fid["tokens"].startswith("loss mask")
    tokens, lengths, _ = subject.prompts("train", 12, 3)
    # by hand: CE over reply targets only
    with torch.no_grad():
        logits = tiny_lm.model(tokens)
    nll = -torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    mask = reply_mask(tokens, lengths, tiny_lm)[:, 1:]
    by_hand = ((nll * mask).sum(1) / mask.sum(1)).mean().item()
    assert math.isclose(fid["train"]["original"]["mean"], by_hand, rel_tol=1e-9)
    every = _token_ce(tiny_lm.model, tokens, lengths, []).mean()
    assert not math.isclose(every, by_hand, rel_tol=1e-3)  # the mask matters


def test_lm_goal_alignment_orients_latents_and_has_controls(tiny_lm, tiny_sae) -> None:
    from workbench.metrics import auroc
    from workbench.sae.lm_analysis import _oriented, alignment_table, encode, lm_goal_alignment

    ga = lm_goal_alignment(tiny_lm, tiny_sae, HOOK, n_fit=80, n_test=40, n_top=3, n_boot=50, n_vec=20)
    assert set(ga["targets"]) == {"persona", "claim_wrong"}
    dirs = ga.pop("directions")
    for target, t in ga["targets"].items():
        assert len(t["latents"]) == 3 and t["n_test"] == 40
        fits = [lat["fit_auroc"] for lat in t["latents"]]
        assert fits == sorted(fits, reverse=True) and all(f >= 0.5 for f in fits)
        assert all(lat["polarity"] in (1, -1) for lat in t["latents"])
        for key in ("probe", "diff_of_means", "vector", "control_latent", "control_probe"):
            assert 0.0 <= t[key]["auroc"] <= 1.0 and t[key]["ci95"][0] <= t[key]["ci95"][1]
        assert dirs[target]["sae_decoder"].shape == (16,)
        assert torch.allclose(
            dirs[target]["sae_decoder"], tiny_sae.W_dec[t["best_latent"]].detach() * t["best_polarity"]
        )
    # orientation: polarity -1 turns a latent that fires for label 0 into an AUROC above 0.5
    y = np.array([0, 0, 1, 1], dtype=bool)
    strength, pol = _oriented(y, np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 2.0]]))
    assert strength.tolist() == [1.0, 1.0] and pol.tolist() == [-1.0, 1.0]
    assert auroc(y, -np.array([1.0, 2.0, 0.0, 0.0])) == 1.0
    assert encode(tiny_sae, torch.zeros(2, 16)).shape == (2, 32)
    table = alignment_table(ga)
    assert "shuffled labels" in table and "logistic probe" in table and "`sycophancy` vector" in table
    with pytest.raises(WorkbenchError, match="residual stream hook"):
        lm_goal_alignment(tiny_lm, tiny_sae, "blocks.1.attn.hook_z")


def test_lm_latent_steering_reuses_the_lm_machinery(tiny_lm, tiny_sae) -> None:
    from workbench.sae.lm_analysis import lm_latent_steering, lm_steering_table

    latent = int(np.flatnonzero(np.asarray(tiny_sae.W_dec.detach().norm(dim=1)) > 0)[0])
    res = lm_latent_steering(
        tiny_lm, tiny_sae, HOOK, latent, polarity=-1, coefs=(0.0, 3.0), clamp_values=(0.0,), n=24, n_vec=10, cap_n=12
    )
    names = [(c["name"], c["kind"], c["coef"]) for c in res["conditions"]]
    assert names[0][1] == "splice" and names[-1][1] == "clamp"
    assert [n for n, k, c in names if k == "add"] == [
        "sycophancy vector",
        f"SAE latent {latent} decoder",
        "random direction (control)",
    ] * 2
    for c in res["conditions"]:
        if c["kind"] == "add" and c["coef"] == 0.0:  # coef 0 is no intervention at all: a paired difference of 0
            assert c["minus_baseline"]["agree_wrong"]["diff"] == 0.0
            assert c["minus_baseline"]["logit_diff_wrong"]["diff"] == 0.0
    steered = [c for c in res["conditions"] if c["kind"] == "add" and c["coef"] == 3.0]
    assert all(c["minus_baseline"]["logit_diff_wrong"]["diff"] != 0.0 for c in steered)
    assert res["baseline"]["agree_wrong"]["n"] == 24  # every OOD prompt carries a wrong claim
    table = lm_steering_table(res)
    assert table.count("\n") == len(res["conditions"]) + 2 and "random direction (control) x+3" in table
    with pytest.raises(WorkbenchError, match="out of range"):
        lm_latent_steering(tiny_lm, tiny_sae, HOOK, 999, n=6)


def test_top_activating_tokens_orders_and_marks_context(tiny_lm, tiny_sae) -> None:
    from workbench.sae.lm_analysis import token_latents, top_activating_tokens

    words = [["a", "b", "c"], ["d", "e"]]
    feats = [np.array([[0.0], [2.0], [1.0]]), np.array([[3.0], [0.0]])]
    table = top_activating_tokens(words, feats, 0, n=2, context=1)
    assert table["activation"].tolist() == [3.0, 2.0]
    assert table["context"].tolist() == ["[[d]] e", "a [[b]] c"]
    w, f = token_latents(tiny_lm, tiny_sae, HOOK, ["user : what is 1 plus 2 ? assistant :"])
    assert len(w[0]) == f[0].shape[0] and w[0][0] == "<bos>" and f[0].shape[1] == 32


def test_card_has_lm_alignment_and_steering_sections(tiny_lm, tiny_sae) -> None:
    from workbench.lm.features import VIEWS, lm_analyses
    from workbench.sae.artifact import card_text
    from workbench.sae.metrics import reconstruction_metrics
    from workbench.sae.subjects import lm_subject
    from workbench.sae.train import sae_info

    subject = lm_subject(tiny_lm)
    ds = subject.collect([HOOK], n=10, seed=5, progress=False)
    rec = reconstruction_metrics(tiny_sae, [ds[HOOK]])
    rec.pop("density")
    m = {
        "reconstruction": rec,
        "subject_kind": "lm",
        "sae_lens_version": "x",
        "created": "now",
        "train_seconds": 1.0,
        "train_data": {"description": "toy", "rows": len(ds), "tokens": len(ds)},
        "fidelity": subject.fidelity(tiny_sae, HOOK, episodes=8),
        **lm_analyses(tiny_lm, tiny_sae, HOOK, align_prompts=40, steer_prompts=12, seed=0),
    }
    assert "## Why this hook" not in card_text("toy", sae_info(tiny_sae), m, "cmd")  # sections come from the kind
    extra = VIEWS.card(tiny_sae, subject, HOOK, align_episodes=40, steer_episodes=12, seed=0, progress=False)
    assert extra.metrics["lm_steering_table"] == m["lm_steering_table"]  # the same analyses, the same numbers
    card = card_text("toy", sae_info(tiny_sae), m, "cmd", sections=extra.sections)
    headings = ("## Why this hook", "## Goal alignment: latents vs persona", "## Steering with persona latent")
    assert [card.index(h) for h in headings] == sorted(card.index(h) for h in headings)
    assert "sequence position of the residual stream" in card and "CE recovered =" in card


# ------------------------------------------------------------------------------------------------------- CoinRun
def test_coin_cell_labels_map_the_egocentric_coin_onto_the_layer_grid() -> None:
    from workbench.rl.coinrun.features import coin_cell_labels

    labels = pd.DataFrame(
        {"coin_visible": [True, True, False], "coin_dx": [0, 6, 1], "coin_dy": [0, -6, 1]}  # centre, top right, gone
    )
    ds = ActivationDataset(
        {"h": torch.zeros(3, 2, 4, 4)}, labels, meta={"source": {"env_config": {"view": 6}}}
    )  # 13x13 window -> 4x4 after two pools
    lab = coin_cell_labels(ds, (4, 4))
    # window cell (6, 6) -> (6 >> 2, 6 >> 2) = (1, 1); (0, 12) -> (0, 3); the third row has no coin in view
    assert np.flatnonzero(lab[0]).tolist() == [1 * 4 + 1]
    assert np.flatnonzero(lab[1]).tolist() == [0 * 4 + 3]
    assert not lab[2].any()


def test_policy_subject_on_a_coinrun_agent(coinrun_registry, tmp_path) -> None:
    """The policy subject serves CoinRun agents: rollout collection, spliced fidelity with CoinRun's goal rates, coin
    alignment by position, and the artifact builder end to end (card with the coin table, SAELens folder)."""
    from sae_lens import SAE

    from workbench.sae.analysis import goal_alignment
    from workbench.sae.artifact import build_sae_artifact
    from workbench.sae.subjects import load_subject
    from workbench.sae.train import SAESpec, train_sae

    subject = load_subject("tiny-coinrun")
    assert subject.kind == "coinrun"
    hook = "embedder.block2.res1.resadd_out"
    ds = subject.collect([hook], n=16, seed=0, max_states_per_episode=8, progress=False)
    assert ds.shapes[hook] == (8, 4, 4)
    sae = train_sae(ds, hook, SAESpec(width=16, k=2, tokens=256 * 10, batch_size=256), progress=False)
    fid = subject.fidelity(sae, hook, splits=("ood",), episodes=8, seed=0)["ood"]
    assert fid["goal_keys"][:2] == ["coin", "exit"] and fid["score"] == "coin"
    assert fid["original"]["coin"]["n"] == 8 and "coin" in fid["spliced"]["diff_vs_original"]
    ga = goal_alignment(sae, ds, subject.collect([hook], n=12, seed=1, progress=False), hook, n_boot=20, kind="coinrun")
    assert ga["label"].startswith("coin at this position") and ga["positives_test"] > 0
    with pytest.raises(WorkbenchError, match="did you mean"):
        goal_alignment(sae, ds, ds, hook, kind="coinrunn")
    spec = SAESpec(width=16, k=2, tokens=256 * 4, batch_size=256)
    folder = build_sae_artifact(
        "tiny-coinrun",
        hook,
        spec,
        episodes=8,
        eval_episodes=4,
        fidelity_episodes=4,
        align_episodes=8,
        progress=False,
        work=tmp_path / "work",
    )
    assert (tmp_path / "work" / "tiny-coinrun-embedder-block2-res1-resadd_out-data").is_dir()
    SAE.load_from_disk(folder)
    card = (folder / "card.md").read_text()
    assert "| split | policy | coin | exit |" in card and "coin recovered" in card and "coin at this position" in card
