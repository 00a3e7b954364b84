"""The LM track as a toolkit: any GPT-2-architecture model saved by `transformers`, a tokenizer built by the test
(`tokenizers` BPE), datasets written by the test, and every LM verb through the CLI. Random weights: the machinery,
contracts and error paths are under test, not a trained model's behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError

torch.set_num_threads(1)
WORDS = "the cat dog sat ran on mat rug happy sad very good bad day night yes no Paris Rome is in a".split()


def build_tokenizer(folder: Path):
    """A byte-level BPE trained on sentences of WORDS, so every ' word' is one token; saved as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 8)) for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.save_pretrained(str(folder))
    return fast


def build_gpt2(folder: Path, vocab: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(str(folder))
    return model


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def contrast_rows(n: int = 16) -> list[dict]:
    return [
        {
            "question": f"the {'cat' if i % 2 else 'dog'} sat on the {'mat' if i % 3 else 'rug'}",
            "positive": f" very {['happy', 'good', 'yes'][i % 3]} day",
            "negative": f" very {['sad', 'bad', 'no'][i % 3]} night",
        }
        for i in range(n)
    ]


def ab_rows(n: int = 16) -> list[dict]:
    return [
        {
            "question": f"the {'cat' if i % 2 else 'dog'} ran {'on' if i % 3 else 'in'} the day",
            "answer_matching_behavior": " happy",
            "answer_not_matching_behavior": " sad",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toolkit")
    model = root / "my-gpt2"
    tok = build_tokenizer(model)
    build_gpt2(model, len(tok))
    files = {
        "root": root,
        "model": model,
        "contrast": write_jsonl(root / "contrast.jsonl", contrast_rows()),
        "ab": write_jsonl(root / "ab.jsonl", ab_rows()),
        "labelled": write_jsonl(
            root / "labelled.jsonl",
            [{"text": f"the cat is {'happy' if i % 2 else 'sad'} on a day", "label": i % 2} for i in range(16)],
        ),
        "patch": write_jsonl(
            root / "patch.jsonl",
            [
                {
                    "clean": f"the cat is in {'Paris' if i % 2 else 'Rome'}",
                    "corrupt": f"the dog is in {'Paris' if i % 2 else 'Rome'}",
                    "answer": " happy",
                    "wrong_answer": " sad",
                }
                for i in range(6)
            ],
        ),
        "neutral": write_jsonl(root / "neutral.jsonl", [{"text": "the day is good"}, {"text": "a dog ran in Rome"}]),
    }
    return files


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "results.duckdb"
    monkeypatch.setenv("WORKBENCH_STORE", str(path))
    return path


@pytest.fixture(scope="module")
def lm(world):
    from workbench.lm.model import load_lm

    return load_lm(world["model"])


# ------------------------------------------------------------------------------------------------ loading
def test_hf_folder_without_n_ctx_loads_with_its_tokenizer_and_matching_logits(world, lm) -> None:
    from transformers import GPT2LMHeadModel

    from workbench.lm.tokenizer import HFTokenizer

    assert "n_ctx" not in json.loads((world["model"] / "config.json").read_text())
    assert lm.n_ctx == 32 and any("n_ctx" in note for note in lm.config["config_notes"])
    assert isinstance(lm.tokenizer, HFTokenizer)
    tokens, lengths = lm.encode(["the cat sat", "a dog ran on the mat"])
    assert int(tokens[0, 0]) == lm.bos_id == 0 and lengths.tolist() == [4, 7]
    hf = GPT2LMHeadModel.from_pretrained(str(world["model"]), local_files_only=True).eval()
    with torch.no_grad():
        assert torch.allclose(lm.model(tokens), hf(tokens).logits, atol=1e-4)
    assert lm.single_token(" happy") == lm.token_ids(" happy")[0]
    with pytest.raises(WorkbenchError, match=r"' happy day' is 2 tokens"):
        lm.single_token(" happy day")
    assert lm.format_prompt("the cat", "sys") == "sys\nthe cat" and not lm.has_chat_template


def test_chat_template_is_used_when_the_tokenizer_has_one(world, tmp_path: Path) -> None:
    import shutil

    from workbench.lm.model import load_lm

    folder = tmp_path / "chat"
    shutil.copytree(world["model"], folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
    cfg["chat_template"] += "{% if add_generation_prompt %}[assistant]{% endif %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    lm = load_lm(folder)
    assert lm.has_chat_template
    assert lm.format_prompt("the cat", "be kind", " yes") == "[system] be kind [user] the cat [assistant] yes"


def test_bad_model_folders_are_one_line_naming_the_file(world, tmp_path: Path) -> None:
    import shutil

    from workbench.lm.model import load_lm

    no_weights = tmp_path / "no-weights"
    shutil.copytree(world["model"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(WorkbenchError, match=r"no-weights/model.safetensors: missing"):
        load_lm(no_weights)
    pickled = tmp_path / "pickled"
    shutil.copytree(no_weights, pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not even a pickle: it must never be opened")
    with pytest.raises(WorkbenchError, match=r"pickled/pytorch_model.bin: pickled PyTorch weights are refused"):
        load_lm(pickled)
    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(world["model"] / f, no_tok / f)
    with pytest.raises(WorkbenchError, match=r"no-tokenizer: no tokenizer \(looked for tokenizer.json"):
        load_lm(no_tok)


# ------------------------------------------------------------------------------------------------ datasets
@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"positive": "a", "negative": "b"}'] * 3 + ["{not json"], r"bad.jsonl:4: invalid JSON"),
        (['{"positive": "a", "negative": "b"}'] * 4 + ['{"positive": "a"}'], r"bad.jsonl:5: missing field 'negative'"),
        (['{"positive": "a", "postive": "b"}'], r"bad.jsonl:1: unknown field 'postive'.*did you mean: positive"),
        (['{"positive": "a", "negative": 3}'], r"bad.jsonl:1: field 'negative' must be a non-empty string, got 3"),
        (['{"question": "q", "answer_matching_behavior": "a"}'], r"missing field 'answer_not_matching_behavior'"),
        (["[1, 2]"], r"bad.jsonl:1: expected a JSON object, got list"),
        ([json.dumps({"text": "t", "label": i % 3}) for i in range(6)], r"'label' must take exactly two values"),
        ([json.dumps({"text": "t", "label": ["a", "b"][i % 2]}) for i in range(6)], r"--positive-label"),
        (['{"positive": "a", "negative": "b"}'] * 2, r"bad.jsonl: 2 records; at least 4"),
    ],
)
def test_dataset_errors_name_file_line_and_field(tmp_path: Path, lines: list[str], message: str) -> None:
    from workbench.lm.datasets import load_dataset

    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(WorkbenchError, match=message):
        load_dataset(path)


def test_dataset_kinds_and_patch_pairs_checked_against_the_tokenizer(world, lm, tmp_path: Path) -> None:
    from workbench.lm.datasets import contrast_texts, load_dataset, patch_pairs

    kinds = {k: load_dataset(world[k]).kind for k in ("contrast", "ab", "labelled", "patch")}
    assert kinds == {"contrast": "contrast", "ab": "ab", "labelled": "labelled", "patch": "patch"}
    ct = contrast_texts(lm, load_dataset(world["ab"]))
    assert ct.texts[:2] == ["the dog ran in the day happy", "the dog ran in the day sad"]
    assert ct.labels[:2].tolist() == [1.0, 0.0] and ct.unit[:2].tolist() == [0, 0]
    pairs = patch_pairs(lm, load_dataset(world["patch"]))
    assert pairs["clean"].shape == pairs["corrupt"].shape and pairs["equal_lengths"]
    bad = [{"clean": "the cat is in", "corrupt": "the cat is in the", "answer": " yes", "wrong_answer": " no"}] * 4
    with pytest.raises(WorkbenchError, match=r"bad.jsonl:1: field 'corrupt': 6 tokens but 'clean' is 5"):
        patch_pairs(lm, load_dataset(write_jsonl(tmp_path / "bad.jsonl", bad)))
    bad = [{"clean": "the cat", "corrupt": "the dog", "answer": " happy day", "wrong_answer": " no"}] * 4
    with pytest.raises(WorkbenchError, match=r"bad2.jsonl:1: field 'answer': ' happy day' is 2 tokens"):
        patch_pairs(lm, load_dataset(write_jsonl(tmp_path / "bad2.jsonl", bad)))


def test_scorers() -> None:
    from workbench.lm.datasets import load_scorer

    assert load_scorer("keywords:happy, good")("a Happy day") == 1.0
    assert load_scorer("keywords:happy")("unhappy") == 0.0
    assert load_scorer("regex:d[ao]g")("the dog") == 1.0
    assert load_scorer("os.path:isabs")("/x") == 1.0
    for spec, msg in (
        ("nosuchmod:f", "cannot import module"),
        ("os.path:nope", "has no function"),
        ("regex:(", "invalid regular expression"),
    ):
        with pytest.raises(WorkbenchError, match=msg):
            load_scorer(spec)


# ------------------------------------------------------------------------------------------------ hooks
def test_cap_conditional_and_after_prompt_hooks(lm) -> None:
    from workbench.hooks import run_with_cache
    from workbench.lm import interventions as I
    from workbench.lm.toolkit import _Lengths

    tokens, lengths = lm.encode(["the cat sat on the mat", "a dog ran"])
    name = "blocks.1.hook_resid_post"
    _, base = run_with_cache(lm.model, tokens, names_filter=name)
    d = torch.randn(16, generator=torch.Generator().manual_seed(0))
    u = d / d.norm()
    proj = base[name] @ u
    lo, hi = float(proj.quantile(0.25)), float(proj.quantile(0.75))
    hooks = I.cap_spec(1, d, lo, hi)(tokens, lengths)
    with torch.no_grad():
        from workbench.hooks import hooks as installed

        with installed(lm.model, hooks):
            _, capped = run_with_cache(lm.model, tokens, names_filter=name)
    p2 = capped[name] @ u
    assert float(p2.min()) >= lo - 1e-5 and float(p2.max()) <= hi + 1e-5
    rest = capped[name] - p2[..., None] * u
    assert torch.allclose(rest, base[name] - proj[..., None] * u, atol=1e-5)  # only the projection moved

    # after-prompt steering: positions before the last prompt token are untouched
    lens = _Lengths(lengths, torch.tensor([4, 2]))
    mask = I.after_mask(tokens, lens)
    assert mask[0].tolist() == [False, False, False, True, True, True, True] and mask[1, :4].tolist() == [
        False,
        True,
        True,
        True,
    ]
    # conditional: a threshold below every prompt's projection fires everywhere, above none
    log = I.GateLog()
    spec = I.conditional_spec(1, d, 3.0, condition=d, condition_layer=0, threshold=-1e9, log=log)
    assert [h[0] for h in spec(tokens, lens)] == ["blocks.0.hook_resid_post", name]
    log_none = I.GateLog()
    from workbench.lm.toolkit import answer_logprob

    answer_logprob(lm, ["the cat", "a dog"], [" yes", " no"], spec)
    answer_logprob(
        lm,
        ["the cat", "a dog"],
        [" yes", " no"],
        I.conditional_spec(1, d, 3.0, condition=d, condition_layer=1, threshold=1e9, log=log_none),
    )
    assert log.rate == 1.0 and log_none.rate == 0.0
    with pytest.raises(WorkbenchError, match="after the steering layer"):
        I.conditional_spec(0, d, 1.0, condition=d, condition_layer=1, threshold=0.0)


# ------------------------------------------------------------------------------------------------ CLI
def run_json(cli, *args: str) -> dict:
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_cli_directions_every_method(cli, world, store: Path, tmp_path: Path) -> None:
    model = str(world["model"])
    for method in ("mean-diff", "pca", "logistic"):
        obj = run_json(cli, "lm", "directions", model, "--dataset", str(world["contrast"]), "--method", method)
        assert obj["method"] == method and len(obj["rows"]) == 2
        for r in obj["rows"]:
            assert 0 <= r["auroc"] <= 1 and 0 <= r["control_auroc"] <= 1 and r["n_test"] == 16
            assert r["ci_low"] <= r["auroc"] <= r["ci_high"] and "pair_accuracy" in r
    vec = tmp_path / "v.safetensors"
    obj = run_json(
        cli, "lm", "directions", model, "--dataset", str(world["labelled"]), "--position", "-1", "--position", "mean",
        "--save", str(vec),
    )  # fmt: skip
    assert {r["position"] for r in obj["rows"]} == {-1, "mean"} and obj["dataset"]["kind"] == "labelled"
    from safetensors.torch import load_file

    assert load_file(str(vec))["vectors"].shape == (2, 16)


def test_cli_steer_sweep_has_controls_and_costs(cli, world, store: Path) -> None:
    obj = run_json(
        cli, "lm", "steer", str(world["model"]), "--dataset", str(world["ab"]), "--layer", "1", "--coef", "-2",
        "--coef", "2", "--neutral", str(world["neutral"]),
    )  # fmt: skip
    assert obj["mode"] == "add" and obj["n_test"] == 8 and obj["neutral"]["n"] == 2
    assert [c["coef"] for c in obj["conditions"]] == [-2.0, 2.0]
    for c in obj["conditions"]:
        for side in ("steered", "control"):
            d = c[side]
            assert set(d) >= {"behaviour", "trait_rate", "ce", "kl", "minus_baseline"}
            assert d["kl"]["mean"] > 0 and d["minus_baseline"]["behaviour"]["n"] == 8
            lo, hi = d["minus_baseline"]["behaviour"]["ci95"]
            assert lo <= d["minus_baseline"]["behaviour"]["diff"] <= hi
    assert obj["baseline"]["kl"]["mean"] == 0.0
    # the same seed gives the same numbers
    again = run_json(
        cli, "lm", "steer", str(world["model"]), "--dataset", str(world["ab"]), "--layer", "1", "--coef", "-2",
        "--coef", "2", "--neutral", str(world["neutral"]),
    )  # fmt: skip
    assert again["conditions"] == obj["conditions"]
    assert store.exists()


def test_cli_conditional_cap_ablate_monitor_and_scorer(cli, world, store: Path) -> None:
    model, ab = str(world["model"]), str(world["ab"])
    cond = run_json(cli, "lm", "steer", model, "--dataset", ab, "--layer", "1", "--coef", "4", "--mode", "conditional")
    assert 0 <= cond["conditions"][0]["gate_rate"] <= 1 and cond["condition"]["layer"] == 1
    cap = run_json(cli, "lm", "steer", model, "--dataset", ab, "--layer", "1", "--mode", "cap", "--cap-low", "0.5")
    c = cap["conditions"][0]
    assert c["cap_quantiles"] == [0.5, None] and c["cap"][1] is None and "control" in c
    abl = run_json(cli, "lm", "ablate", model, "--dataset", ab)
    assert [r["layer"] for r in abl["conditions"]] == [0, 1] and "ablated" in abl["conditions"][0]
    mon = run_json(cli, "lm", "monitor", model, "--dataset", str(world["labelled"]))
    assert len(mon["rows"]) == 2 and all(-1 <= r["r"] <= 1 for r in mon["rows"])
    gen = run_json(
        cli, "lm", "steer", model, "--dataset", str(world["labelled"]), "--layer", "0", "--coef", "2",
        "--scorer", "keywords:happy,good", "--max-new", "3",
    )  # fmt: skip
    assert gen["behaviour"].startswith("scorer keywords:happy,good") and "examples" in gen["conditions"][0]["steered"]


def test_cli_patch_pairs_both_modes_and_heads(cli, world, store: Path) -> None:
    obj = run_json(cli, "patch", str(world["model"]), "--pairs", str(world["patch"]), "--n-boot", "50")
    assert set(obj["modes"]) == {"denoising", "noising"} and obj["equal_lengths"] and obj["n"] == 6
    sweeps = obj["modes"]["denoising"]["sweeps"]
    assert set(sweeps) == {"resid_pre", "attn_out", "mlp_out", "z"}
    T = len(obj["positions"])
    assert np.array(sweeps["resid_pre"]["effect"]).shape == (2, T)
    assert np.array(sweeps["z"]["effect"]).shape == (2, 2)  # layers x heads
    # denoising the whole residual stream at the first layer restores the clean run exactly
    first = np.array(sweeps["resid_pre"]["effect"])[0]
    assert np.nanmax(first) == pytest.approx(1.0, abs=1e-4) or np.isnan(first).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lm", "directions", "{model}", "--dataset", "{root}/nope.jsonl"), "does not exist"),
        (("lm", "directions", "{model}", "--dataset", "{contrast}", "--method", "pcaa"), "unknown method 'pcaa'"),
        (("lm", "steer", "{model}", "--dataset", "{contrast}", "--layer", "7"), "layer 7 is out of range"),
        (("lm", "steer", "{model}", "--dataset", "{labelled}", "--layer", "0"), "no behaviour to measure"),
        (("lm", "steer", "{model}", "--dataset", "{ab}", "--mode", "cap"), "--mode cap needs"),
        (("lm", "monitor", "{model}", "--dataset", "{ab}", "--position", "3"), "position must count from the end"),
        (("patch", "{model}", "--pairs", "{contrast}"), "unknown field 'question' in patching pairs"),
        (("lm", "directions", "{root}/missing-model", "--dataset", "{contrast}"), "missing-model"),
    ],
)
def test_cli_bad_input_exits_2_one_line_nothing_written(cli, world, store: Path, args, message) -> None:
    fmt = {k: str(v) for k, v in world.items()}
    code, out, err = cli(*[a.format(**fmt) for a in args])
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not store.exists()


def test_persona_word_tokenizer_model_takes_datasets_too(cli, tmp_path: Path, store: Path) -> None:
    """Our own artifact format (word tokenizer) goes through the same dataset verbs."""
    from workbench.lm import corpus
    from workbench.lm.model import build_model, save_lm
    from workbench.lm.tokenizer import WordTokenizer

    cfg = corpus.CorpusConfig(max_operand=5, max_offset=2)
    tok = WordTokenizer(corpus.vocabulary(cfg))
    model_cfg = {
        "n_layers": 2,
        "d_model": 16,
        "n_heads": 2,
        "d_head": 8,
        "d_mlp": 32,
        "n_ctx": 64,
        "d_vocab": tok.vocab_size,
    }
    folder = save_lm(
        tmp_path / "word-lm", build_model(model_cfg, seed=0), tok, {"kind": "lm", "model": model_cfg}, "", {}
    )
    rows = [
        {
            "question": f"user : what is {a} plus {b} ?",
            "positive": f" assistant : {a + b} .",
            "negative": f" assistant : {a + b + 1} .",
        }
        for a in range(3) for b in range(3)
    ]  # fmt: skip
    ds = write_jsonl(tmp_path / "sums.jsonl", rows)
    obj = run_json(cli, "lm", "directions", str(folder), "--dataset", str(ds))
    assert len(obj["rows"]) == 2
    obj = run_json(cli, "lm", "steer", str(folder), "--dataset", str(ds), "--layer", "1", "--coef", "1")
    assert obj["conditions"][0]["steered"]["behaviour"]["n"] == 5  # 9 records: 4 fit, 5 held out
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "user : what is zebra ?", "label": i % 2} for i in range(4)])
    code, _, err = cli("lm", "directions", str(folder), "--dataset", str(bad))
    assert code == 2 and "'zebra' is not in the tokenizer" in err


# ------------------------------------------------------------------------------------------------ SAEs from elsewhere
def test_saelens_folder_for_an_lm_hook_loads_and_splices_or_names_both_widths(lm, tmp_path: Path) -> None:
    from sae_lens import SAE, TopKSAEConfig

    from workbench.hooks import run_with_hooks
    from workbench.interventions import sae_splice
    from workbench.lm.sae_io import check_lm_sae, load_lm_sae

    for name, d_in in (("ok", 16), ("wide", 12)):
        cfg = TopKSAEConfig(d_in=d_in, d_sae=32, k=4)
        cfg.metadata.hook_name = "blocks.1.hook_resid_post"
        SAE.from_dict(cfg.to_dict()).save_model(str(tmp_path / name))
    sae = load_lm_sae(tmp_path / "ok", lm)
    assert sae.cfg.d_in == 16 and sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    tokens, _ = lm.encode(["the cat sat"])
    out = run_with_hooks(lm.model, tokens, fwd_hooks=[("blocks.1.hook_resid_post", sae_splice(sae, error_term=True))])
    assert torch.allclose(out, lm.model(tokens), atol=1e-4)  # the error term makes an unedited splice the identity
    with pytest.raises(WorkbenchError, match=r"wide: the SAE reads d_in = 12 but blocks.1.hook_resid_post .* width 16"):
        load_lm_sae(tmp_path / "wide", lm)
    with pytest.raises(WorkbenchError, match=r"unknown hook 'blocks.1.hook_resid_pots'; did you mean"):
        check_lm_sae(tmp_path / "ok", lm, "blocks.1.hook_resid_pots")
    (tmp_path / "ok" / "sae_weights.safetensors").rename(tmp_path / "ok" / "sae_weights.pt")
    with pytest.raises(WorkbenchError, match=r"sae_weights.pt: pickled SAE weights are refused"):
        load_lm_sae(tmp_path / "ok", lm)


# ------------------------------------------------------------------------------------------------ the register recipe
TINY_REGISTER = """
[artifact]
name = "tiny-register"
[tokenizer]
vocab_size = 400
n_texts = 300
[model]
n_layer = 1
n_embd = 16
n_head = 2
n_inner = 32
n_positions = 64
[train]
steps = 4
batch_size = 4
warmup_steps = 1
log_every = 2
checkpoint_every = 2
[eval]
n = 12
"""


def test_register_recipe_resumes_to_the_same_weights_and_ships_datasets(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file

    import workbench.lm.train_hf as T
    from workbench.lm.datasets import load_dataset
    from workbench.lm.model import load_lm

    recipe = tmp_path / "tiny-register.toml"
    recipe.write_text(TINY_REGISTER)
    full = T.train_hf_recipe(recipe, out=tmp_path / "full", progress=False)

    def interrupted(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(T, "heldout_loss", interrupted)  # dies after training, past the step-2 checkpoint
    with pytest.raises(RuntimeError, match="interrupted"):
        T.train_hf_recipe(recipe, out=tmp_path / "resumed", progress=False)
    state = json.loads((tmp_path / "resumed.ckpt" / "state.json").read_text())
    assert state["step"] == 2
    monkeypatch.undo()
    resumed = T.train_hf_recipe(recipe, out=tmp_path / "resumed", progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed.ckpt").exists()
    lm = load_lm(resumed)  # a plain HF folder: config.json without n_ctx, BPE tokenizer
    assert "n_ctx" not in json.loads((resumed / "config.json").read_text()) and lm.n_layers == 1
    assert set(json.loads((resumed / "metrics.json").read_text())["eval"]) == {"train", "noheader", "conflict"}
    for name in ("header-contrast", "register-contrast", "register-ab", "register-patch", "topic-labelled"):
        load_dataset(resumed / f"{name}.jsonl", positive_label="work")
    assert "| noheader |" in (resumed / "card.md").read_text()


def test_cli_vector_file_is_what_steers(cli, world, store: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    vec = torch.zeros(2, 16)
    vec[:, 3] = 5.0
    save_file({"vectors": vec}, str(tmp_path / "v.safetensors"))
    obj = run_json(
        cli, "lm", "steer", str(world["model"]), "--dataset", str(world["ab"]), "--layer", "1", "--coef", "1",
        "--vector-file", str(tmp_path / "v.safetensors"),
    )  # fmt: skip
    assert obj["method"] == "given" and obj["vector_norm"] == pytest.approx(5.0)
    save_file({"vectors": torch.zeros(3, 16)}, str(tmp_path / "bad.safetensors"))
    code, _, err = cli(
        "lm",
        "monitor",
        str(world["model"]),
        "--dataset",
        str(world["ab"]),
        "--vector-file",
        str(tmp_path / "bad.safetensors"),
    )
    assert code == 2 and "vectors have shape (3, 16) but my-gpt2 needs (n_layers, d_model) = (2, 16)" in err
