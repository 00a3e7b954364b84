"""Attention views that work offline: circuitsvis heads rendered with its JavaScript bundle inlined.

Why not `circuitsvis.attention.attention_heads(...)` as is: its result shows the CDN version (`import ... from
"https://unpkg.com/circuitsvis@.../esm.js"`) when converted with `str()`, and in Jupyter it first probes
`http://google.com` to decide between the CDN and the local copy. On an offline machine, in CI, or in a saved
report that is a blank box or a stall. The package ships its compiled bundle (`circuitsvis/dist/cdn/iife.js`,
~1.3 MB), and `RenderedHTML.local_src` is the same view with that bundle inlined, so we always take that one. The
HTML then needs nothing from the network: save it to a file, embed it in Streamlit (`components.html`), or
display it in Jupyter.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["OfflineHTML", "attention_html", "attention_pattern", "bundle_path", "pattern_hook"]


class OfflineHTML(str):
    """An HTML string that Jupyter displays as HTML (`_repr_html_`) and that `str()` leaves as the offline page."""

    def _repr_html_(self) -> str:
        return str(self)

    def save(self, path: str | Path) -> Path:
        """Write the page to `path` (UTF-8) and return the path."""
        p = Path(path)
        p.write_text(str(self), encoding="utf-8")
        return p


def bundle_path() -> Path:
    """The circuitsvis JavaScript bundle the package ships (inlined into every view)."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise WorkbenchError(f"circuitsvis bundle missing at {path}; reinstall circuitsvis (offline views need it)")
    return path


def pattern_hook(layer: int) -> str:
    """TransformerLens hook name of layer `layer`'s attention pattern: (batch, head, dest, src)."""
    return f"blocks.{int(layer)}.attn.hook_pattern"


def attention_pattern(model: nn.Module, tokens: Tensor, layer: int) -> Tensor:
    """Attention pattern (H, T, T) of one prompt at `layer`, caching only that hook.

    tokens: (T,) or (1, T) token ids. Uses `workbench.hooks.run_with_cache` with a one-name filter, so nothing else
    is kept in memory.
    """
    from workbench.hooks import run_with_cache

    t = torch.as_tensor(tokens)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] != 1:
        raise WorkbenchError(
            f"attention_pattern takes one prompt, tokens of shape (T,) or (1, T), got {tuple(t.shape)}"
        )
    name = pattern_hook(layer)
    with torch.no_grad():
        _, cache = run_with_cache(model, t, names_filter=name)
    return cache[name][0]


def _pattern(cache_or_pattern: Any, layer: int | None, batch_index: int) -> Tensor:
    if isinstance(cache_or_pattern, Mapping) or hasattr(cache_or_pattern, "cache_dict"):
        if layer is None:
            raise WorkbenchError("pass layer= when giving a cache (the view shows one layer's heads)")
        name = pattern_hook(layer)
        try:
            pattern = cache_or_pattern[name]
        except KeyError:
            raise WorkbenchError(f"{name!r} is not in the cache; cache it with names_filter={name!r}") from None
    else:
        pattern = cache_or_pattern
    pattern = torch.as_tensor(pattern).detach().float().cpu()
    if pattern.ndim == 4:
        if not 0 <= batch_index < pattern.shape[0]:
            raise WorkbenchError(f"batch_index {batch_index} out of range for a batch of {pattern.shape[0]}")
        pattern = pattern[batch_index]
    if pattern.ndim != 3 or pattern.shape[1] != pattern.shape[2]:
        raise WorkbenchError(
            f"attention pattern must be (heads, T, T) or (batch, heads, T, T), got {tuple(pattern.shape)}"
        )
    return pattern


def attention_html(
    model: nn.Module | None,
    tokens_str: Sequence[str],
    cache_or_pattern: Any,
    layer: int | None = None,
    *,
    heads: Sequence[int] | None = None,
    batch_index: int = 0,
    title: str | None = None,
    full_page: bool = True,
) -> OfflineHTML:
    """A self-contained HTML view of one layer's attention heads (circuitsvis `attention_heads`), JavaScript inlined.

    tokens_str: the T token strings (labels). cache_or_pattern: a cache (TransformerLens ActivationCache or
    workbench's) holding `blocks.{layer}.attn.hook_pattern`, a pattern tensor (H, T, T) or (batch, H, T, T), or token
    ids (T,) / (1, T) to run `model` on (then only that hook is cached). heads: subset of heads to show.
    full_page: wrap in `<!doctype html>...` so the string can be saved as a file; False gives a fragment for embedding.
    """
    from circuitsvis.attention import attention_heads

    given = torch.as_tensor(cache_or_pattern) if isinstance(cache_or_pattern, (Tensor, list)) else None
    if given is not None and not given.is_floating_point():  # token ids: compute the pattern
        if model is None or layer is None:
            raise WorkbenchError("pass model and layer to compute the pattern from token ids")
        pattern = attention_pattern(model, given, layer)
    else:
        pattern = _pattern(cache_or_pattern, layer, batch_index)
    n_heads, seq_len, _ = pattern.shape
    if len(tokens_str) != seq_len:
        raise WorkbenchError(f"{len(tokens_str)} token strings for a pattern over {seq_len} positions")
    head_ids = list(range(n_heads)) if heads is None else [int(h) for h in heads]
    bad = [h for h in head_ids if not 0 <= h < n_heads]
    if bad or not head_ids:
        raise WorkbenchError(f"heads must be a non-empty subset of 0..{n_heads - 1}, got {list(heads or [])}")
    prefix = f"L{layer}" if layer is not None else ""
    rendered = attention_heads(
        attention=pattern[head_ids],
        tokens=[str(t) for t in tokens_str],
        attention_head_names=[f"{prefix}H{h}" for h in head_ids],
        mask_upper_tri=True,
    )
    fragment = rendered.local_src  # the inlined-bundle variant; never the CDN one (`str(rendered)`)
    if "https://unpkg.com" in fragment:  # a future circuitsvis that changes this would break offline use silently
        raise WorkbenchError("circuitsvis rendered a CDN import; offline attention views need its local bundle")
    if not full_page:
        return OfflineHTML(fragment)
    heading = title or (f"attention, layer {layer}" if layer is not None else "attention")
    page = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(heading)}</title>\n</head>\n<body>\n<h3>{html.escape(heading)}</h3>\n"
        f"{fragment}\n</body>\n</html>\n"
    )
    return OfflineHTML(page)
