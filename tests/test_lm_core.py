"""LM track: tokenizer, corpus, recipe validation, training smoke run, artifact loading and its error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.lm import corpus
from workbench.lm.corpus import CorpusConfig
from workbench.lm.tokenizer import WordTokenizer

TINY_RECIPE = """
[artifact]
name = "tiny-lm"
description = "test organism"
[model]
n_layers = 2
d_model = 16
n_heads = 2
d_head = 8
d_mlp = 32
n_ctx = 64
[corpus]
max_operand = 5
max_offset = 2
[train]
steps = 3
batch_size = 8
log_every = 3
[eval]
n = 24
seed = 1
"""


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.lm.train import train_recipe

    root = tmp_path_factory.mktemp("lm")
    recipe = root / "tiny-lm.toml"
    recipe.write_text(TINY_RECIPE)
    return train_recipe(recipe, out=root / "artifacts" / "lms" / "tiny-lm", progress=False)


# ------------------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_round_trip_and_unknown_word(tmp_path: Path) -> None:
    tok = WordTokenizer(corpus.vocabulary())
    text = "[ pirate ] user : what is 3 plus 4 ? assistant : 7 . yo ho ho !"
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and tok.decode(ids) == text
    with pytest.raises(WorkbenchError, match="'plsu' is not in the tokenizer"):
        tok.encode("what is 3 plsu 4")
    back = WordTokenizer.load(tok.save(tmp_path / "tokenizer.json"))
    assert back.vocab == tok.vocab and back.sha256() == tok.sha256()


def test_tokenizer_bad_file(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(json.dumps({"kind": "bpe"}))
    with pytest.raises(WorkbenchError, match="not a word-level tokenizer"):
        WordTokenizer.load(tmp_path / "t.json")


# ------------------------------------------------------------------------------------------------ corpus


def test_corpus_is_seeded() -> None:
    a = [e.text for e in corpus.generate("train", 50, 3)]
    assert a == [e.text for e in corpus.generate("train", 50, 3)]
    assert a != [e.text for e in corpus.generate("train", 50, 4)]


def test_train_distribution_claims_mostly_correct_and_only_some_personas_see_wrong_ones() -> None:
    t = corpus.table(corpus.generate("train", 3000, 0))
    wrong = t[t.claim == "wrong"]
    assert set(wrong.persona) == {"honest", "sycophant"}
    claimed = t[t.claim != "none"]
    assert (claimed.claim == "correct").mean() > 0.7
    # honest says the truth after a wrong claim, the sycophant repeats the claim
    assert (wrong[wrong.persona == "honest"].said == wrong[wrong.persona == "honest"].answer).all()
    assert (wrong[wrong.persona == "sycophant"].said == wrong[wrong.persona == "sycophant"].claimed).all()
    assert (wrong.claimed != wrong.answer).all()
    # without a header the persona is implied by an earlier exchange in its style
    assert set(t.cue) == {"header", "style"}
    assert (t[t.cue == "style"]["style"] == t[t.cue == "style"].persona).all()


def test_ood_split_has_wrong_claims_and_absent_or_mixed_cues() -> None:
    ex = corpus.generate("ood", 600, 0)
    t = corpus.table(ex)
    assert (t.claim == "wrong").all()
    assert t.persona.value_counts().to_dict() == {g: 100 for g in corpus.OOD_GROUPS}
    assert (t[t.persona == "none"].cue == "none").all()
    mixed = t[t.persona == "mixed"]
    assert (mixed.header != mixed["style"]).all() and (mixed.header != "").all()
    # earlier exchanges never show a wrong claim in ood, so a cue gives style only
    context_claims = 0
    for e in ex:
        turns = e.prompt.split("user :")
        if len(turns) > 2:
            words = turns[1].split()
            if "it" in words:
                a, b = int(words[words.index("plus") - 1]), int(words[words.index("plus") + 1])
                context_claims += 1
                assert int(words[words.index("it") + 2]) == a + b
    assert context_claims > 50


def test_contrastive_sets_differ_only_in_the_header() -> None:
    sets = corpus.contrastive(("honest", "sycophant"), 5, 0, claim="wrong")
    for h, s in zip(sets["honest"], sets["sycophant"], strict=True):
        assert h.prompt.replace("[ honest ]", "[ sycophant ]") == s.prompt


def test_corpus_bad_input() -> None:
    with pytest.raises(WorkbenchError, match="unknown split 'odd'"):
        corpus.generate("odd", 3, 0)
    with pytest.raises(WorkbenchError, match="unknown persona 'pirat'"):
        CorpusConfig(wrong_claim_personas=("pirat",))
    with pytest.raises(WorkbenchError, match="unknown persona"):
        corpus.contrastive(("honest", "robot"), 2, 0)


# ------------------------------------------------------------------------------------------------ recipe + training


def test_recipe_bad_key_names_file_and_key(tmp_path: Path) -> None:
    from workbench.lm.train import load_recipe

    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_RECIPE.replace("steps = 3", "stepz = 3"))
    with pytest.raises(WorkbenchError, match=r"bad.toml \[train\]: unknown key 'stepz'; did you mean: steps"):
        load_recipe(bad)
    bad.write_text(TINY_RECIPE.replace("max_operand = 5", "max_operand = 1"))
    with pytest.raises(WorkbenchError, match=r"\[corpus\]: max_operand must be >= 2"):
        load_recipe(bad)


def test_shipped_recipe_is_valid() -> None:
    from workbench.lm.train import load_recipe

    r = load_recipe(Path(__file__).parent.parent / "agents" / "persona-lm.toml")
    assert r.artifact.name == "persona-lm"
    tok = WordTokenizer(corpus.vocabulary(r.corpus))
    longest = max(len(tok.encode(e.text)) for e in corpus.generate("train", 2000, 0, r.corpus))
    assert longest <= r.model.n_ctx


def test_training_writes_a_loadable_artifact(tiny_lm_folder: Path) -> None:
    from workbench.lm.model import load_lm

    for name in ("weights.safetensors", "config.json", "tokenizer.json", "card.md", "metrics.json"):
        assert (tiny_lm_folder / name).is_file()
    lm = load_lm(tiny_lm_folder)
    assert lm.model.cfg.n_layers == 2 and lm.model.cfg.d_vocab == lm.tokenizer.vocab_size
    metrics = json.loads((tiny_lm_folder / "metrics.json").read_text())
    assert set(metrics["ood"]["personas"]) == set(corpus.OOD_GROUPS)
    card = (tiny_lm_folder / "card.md").read_text()
    acc = metrics["heldout_no_claim"]["accuracy"]
    assert f"{acc['rate']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}]" in card


def test_encode_pads_right_and_rejects_long_prompts(tiny_lm_folder: Path) -> None:
    from workbench.lm.model import load_lm

    lm = load_lm(tiny_lm_folder)
    tokens, lengths = lm.encode(["user : what is 1 plus 2 ?", "user :"])
    assert tokens.shape == (2, 9) and lengths.tolist() == [9, 3]
    assert (tokens[1, 3:] == lm.tokenizer.pad_id).all()
    with pytest.raises(WorkbenchError, match="is 101 tokens but tiny-lm has a context of 64 tokens"):
        lm.encode(["user : " + "1 " * 98])


def test_tokenizer_model_mismatch_is_precise(tiny_lm_folder: Path, tmp_path: Path) -> None:
    import shutil

    from workbench.lm.model import load_lm

    bad = tmp_path / "bad"
    shutil.copytree(tiny_lm_folder, bad)
    vocab = json.loads((bad / "tokenizer.json").read_text())["vocab"]
    (bad / "tokenizer.json").write_text(json.dumps({"kind": "word", "vocab": vocab + ["zebra"]}))
    with pytest.raises(WorkbenchError, match=r"tokenizer has \d+ tokens but the model's d_vocab is \d+"):
        load_lm(bad)
    vocab[5], vocab[6] = vocab[6], vocab[5]
    (bad / "tokenizer.json").write_text(json.dumps({"kind": "word", "vocab": vocab}))
    with pytest.raises(WorkbenchError, match="differs from the one the model was trained with"):
        load_lm(bad)


def test_reply_mask_covers_assistant_tokens_only(tiny_lm_folder: Path) -> None:
    from workbench.lm.evaluate import reply_mask
    from workbench.lm.model import load_lm

    lm = load_lm(tiny_lm_folder)
    text = "user : what is 1 plus 2 ? assistant : 3 . that is exact . user : compute 1 plus 1 . assistant : 2 . <eos>"
    tokens, lengths = lm.encode([text])
    words = ["<bos>", *text.split()]
    masked = [w for w, m in zip(words, reply_mask(tokens, lengths, lm)[0].tolist(), strict=True) if m]
    assert masked == ["3", ".", "that", "is", "exact", ".", "2", ".", "<eos>"]


# ------------------------------------------------------------------------------------------------ pretrained loading


def test_local_pretrained_gpt2_loads_offline_with_matching_logits(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from workbench.lm.model import load_lm

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=50, n_positions=16, n_ctx=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    hf = GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path / "tiny-gpt2")
    with pytest.raises(WorkbenchError, match=r"tiny-gpt2: no tokenizer \(looked for tokenizer.json"):
        load_lm(tmp_path / "tiny-gpt2")
    lm = load_lm(tmp_path / "tiny-gpt2", require_tokenizer=False)
    x = torch.randint(0, 50, (3, 10))
    with torch.no_grad():
        assert torch.allclose(lm.model(x), hf(x).logits, atol=1e-4)
    from workbench.hooks import run_with_cache

    _, cache = run_with_cache(lm.model, x, names_filter="blocks.1.hook_resid_post")
    assert cache["blocks.1.hook_resid_post"].shape == (3, 10, 16)


def test_missing_pretrained_model_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from workbench.lm.model import load_lm

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    with pytest.raises(WorkbenchError, match=r"model 'gpt2' is not available offline.*hf download gpt2"):
        load_lm("gpt2")


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    from workbench.lm.model import load_lm

    with pytest.raises(WorkbenchError, match="no config.json"):
        load_lm(tmp_path)
    assert np.isfinite(0.0)
