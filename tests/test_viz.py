"""Offline attention views: the circuitsvis bundle is inlined and nothing is loaded from the network."""

from __future__ import annotations

import re

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from workbench.errors import WorkbenchError
from workbench.viz import attention_html, attention_pattern, bundle_path

T = 6
TOKENS = ["<bos>", "the", "user", "says", "yes", "?"]


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=16, act_fn="gelu", seed=0
    )
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 50, (1, T), generator=torch.Generator().manual_seed(0))


def remote_script_srcs(page: str) -> list[str]:
    """Every script that would load code from the network: `<script src=http...>` or `import ... from "http..."`."""
    srcs = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)", page, flags=re.IGNORECASE)
    imports = re.findall(r"\bimport\b[^;\n]*?\bfrom\s*[\"'](https?://[^\"']+)", page)
    dynamic = re.findall(r"\bimport\(\s*[\"'](https?://[^\"']+)", page)
    return srcs + imports + dynamic


def test_page_inlines_bundle_and_loads_nothing_remote(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    page = attention_html(model, TOKENS, cache, layer=1)
    bundle = bundle_path().read_text(encoding="utf-8").replace("</script>", "")
    assert bundle[:2000] in page and bundle[-2000:] in page  # the whole bundle is inlined, start to end
    assert len(page) > len(bundle)
    assert remote_script_srcs(page) == []
    assert "unpkg.com" not in page and "cdn.jsdelivr" not in page
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "CircuitsVis.AttentionHeads" in page
    for name in ("L1H0", "L1H3", '"says"'):
        assert name in page
    assert page._repr_html_() == str(page)


def test_the_check_would_catch_a_cdn_page(model, tokens):
    """The detector above is not vacuous: circuitsvis's own `str()` output (the CDN variant) is caught."""
    from circuitsvis.attention import attention_heads

    pattern = attention_pattern(model, tokens, 0)
    cdn_page = str(attention_heads(attention=pattern, tokens=TOKENS))
    assert remote_script_srcs(cdn_page)


def test_pattern_sources_agree(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    direct = attention_pattern(model, tokens[0], 0)
    assert direct.shape == (4, T, T)
    assert torch.allclose(direct, cache["blocks.0.attn.hook_pattern"][0])
    assert torch.allclose(direct.sum(-1), torch.ones(4, T), atol=1e-5)  # rows of a softmax
    from_ids = attention_html(model, TOKENS, tokens, layer=0, heads=[2], full_page=False)
    from_tensor = attention_html(None, TOKENS, direct, layer=0, heads=[2], full_page=False)
    strip = re.compile(r"circuits-vis-[0-9a-f-]+")  # each render gets a random element id
    assert strip.sub("", from_ids) == strip.sub("", from_tensor)
    assert "<html" not in from_ids and "L0H2" in from_ids and "L0H1" not in from_ids


def test_save(tmp_path, model, tokens):
    page = attention_html(model, TOKENS, tokens, layer=0)
    path = page.save(tmp_path / "attn.html")
    assert path.read_text(encoding="utf-8") == page


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((TOKENS[:-1], "PATTERN"), {"layer": 0}, "5 token strings for a pattern over 6"),
        ((TOKENS, "CACHE"), {}, "pass layer="),
        ((TOKENS, "CACHE"), {"layer": 0, "heads": [7]}, "heads must be"),
        ((TOKENS, torch.rand(6, 5)), {"layer": 0}, "must be \\(heads, T, T\\)"),
        ((TOKENS, "IDS"), {}, "pass model and layer"),
    ],
)
def test_bad_input(model, tokens, args, kwargs, match):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    subs = {"PATTERN": attention_pattern(model, tokens, 0), "CACHE": cache, "IDS": tokens}
    strs, source = args
    source = subs.get(source, source) if isinstance(source, str) else source
    with pytest.raises(WorkbenchError, match=match):
        attention_html(model if "IDS" not in args else None, strs, source, **kwargs)


def test_missing_hook_in_cache(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    with pytest.raises(WorkbenchError, match="not in the cache"):
        attention_html(model, TOKENS, cache, layer=1)
