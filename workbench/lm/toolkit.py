"""LM verbs on any model and any dataset: the forward-pass primitives every verb is built from.

Why one small set of primitives: directions, steering, ablation, monitoring and capability cost all reduce to four
questions about a batch of texts -- the residual stream at some positions, the log-probability of an answer after a
prompt, the loss on a text, and how far an intervention moves the next-token distribution (KL). Each is one batched
function here, with hooks riding along as `workbench.hooks` fwd_hooks (or a `(tokens, lengths) -> hooks` function
for hooks that depend on the batch, such as "add only after the prompt"). Texts are encoded by the model's own
tokenizer (`LM.encode`: word-level or subword alike), right-padded, BOS first when the tokenizer has one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.hooks import run_with_cache, run_with_hooks
from workbench.lm.model import LM

HookList = Sequence[tuple[object, Callable]]
HookSpec = HookList | Callable[[Tensor, Tensor], HookList] | None
"""fwd_hooks, or a function (tokens (B, T), lengths (B,)) -> fwd_hooks built per batch."""

BATCH = 64


def hooks_for(spec: HookSpec, tokens: Tensor, lengths: Tensor) -> HookList:
    if spec is None:
        return []
    return spec(tokens, lengths) if callable(spec) else spec


def _pad(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    tokens = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return tokens, lengths


def _check_ctx(lm: LM, rows: list[list[int]], texts: Sequence[str]) -> None:
    for i, r in enumerate(rows):
        if len(r) > lm.n_ctx:
            raise WorkbenchError(
                f"text {i} is {len(r)} tokens but {lm.name} has a context of {lm.n_ctx} tokens: {texts[i][:60]!r}..."
            )


def prompt_answer_ids(lm: LM, prompts: Sequence[str], answers: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token rows BOS + prompt + answer (each encoded on its own, so the answer's tokens are the same whatever the
    prompt) and each row's prompt length (the answer starts there)."""
    rows, starts = [], []
    for p, a in zip(prompts, answers, strict=True):
        head = lm.token_ids(p, bos=True)
        tail = lm.token_ids(a, bos=False)
        if not tail:
            raise WorkbenchError(f"answer {a!r} encodes to no tokens")
        rows.append(head + tail)
        starts.append(len(head))
    _check_ctx(lm, rows, [p + a for p, a in zip(prompts, answers, strict=True)])
    return rows, starts


def answer_logprob(
    lm: LM, prompts: Sequence[str], answers: Sequence[str], fwd_hooks: HookSpec = None, batch_size: int = BATCH
) -> np.ndarray:
    """Sum over the answer's tokens of log P(token | prompt, earlier answer tokens), (N,) float64.

    The hook spec sees the full (prompt + answer) batch; `after_mask` gives it each row's prompt length."""
    rows, starts = prompt_answer_ids(lm, prompts, answers)
    out = np.zeros(len(rows))
    with torch.no_grad():
        for lo in range(0, len(rows), batch_size):
            tokens, lengths = _pad(rows[lo : lo + batch_size], lm.pad_id)
            st = torch.tensor(starts[lo : lo + batch_size])
            logits = run_with_hooks(lm.model, tokens, fwd_hooks=hooks_for(fwd_hooks, tokens, _Lengths(lengths, st)))
            lp = logits[:, :-1].float().log_softmax(-1).gather(2, tokens[:, 1:, None])[..., 0]  # (B, T-1)
            pos = torch.arange(tokens.shape[1] - 1)[None, :] + 1  # the position of each target token
            m = (pos >= st[:, None]) & (pos < lengths[:, None])
            out[lo : lo + len(st)] = (lp * m).sum(1).double().numpy()
    return out


class _Lengths(Tensor):
    """Row lengths that also carry each row's prompt length (`.starts`), for hook specs that steer after it."""

    @staticmethod
    def __new__(cls, lengths: Tensor, starts: Tensor):
        obj = lengths.as_subclass(cls)
        obj.starts = starts
        return obj


def prompt_starts(lengths: Tensor) -> Tensor | None:
    """Each row's prompt length when the batch is prompt + answer (see `answer_logprob`), else None."""
    return getattr(lengths, "starts", None)


def next_token_logprobs(
    lm: LM,
    prompts: Sequence[str],
    fwd_hooks: HookSpec = None,
    batch_size: int = BATCH,
    ids: Sequence[int] | None = None,
) -> Tensor:
    """log-softmax of the next-token logits after each prompt: (N, d_vocab) float32, or (N, len(ids)) for `ids`."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(prompts), batch_size):
            tokens, lengths = lm.encode(list(prompts[lo : lo + batch_size]))
            logits = run_with_hooks(lm.model, tokens, fwd_hooks=hooks_for(fwd_hooks, tokens, lengths))
            last = logits[torch.arange(len(lengths)), lengths - 1].float().log_softmax(-1)
            out.append(last if ids is None else last[:, torch.as_tensor(list(ids))])
    if not out:
        raise WorkbenchError("no prompts")
    return torch.cat(out)


def text_nll(lm: LM, texts: Sequence[str], fwd_hooks: HookSpec = None, batch_size: int = BATCH) -> np.ndarray:
    """Per-text mean next-token cross-entropy (nats) over every token after the first, (N,) float64."""
    return cost_on_texts(lm, texts, fwd_hooks, batch_size)["ce"]


def cost_on_texts(lm: LM, texts: Sequence[str], fwd_hooks: HookSpec = None, batch_size: int = BATCH) -> dict:
    """Capability cost of an intervention on (neutral) texts, per text: {"ce": mean cross-entropy under the hooks,
    "kl": mean KL(unhooked || hooked) of the next-token distributions over the same positions} (both (N,) float64;
    kl is 0 without hooks). One unhooked and one hooked forward per batch."""
    if not len(texts):
        raise WorkbenchError("no texts to measure the capability cost on")
    ce_out, kl_out = [], []
    with torch.no_grad():
        for lo in range(0, len(texts), batch_size):
            tokens, lengths = lm.encode(list(texts[lo : lo + batch_size]))
            hooks = hooks_for(fwd_hooks, tokens, lengths)
            logits = run_with_hooks(lm.model, tokens, fwd_hooks=hooks).float()[:, :-1]
            lp = logits.log_softmax(-1)
            m = (torch.arange(tokens.shape[1] - 1)[None, :] + 1 < lengths[:, None]).float()
            denom = m.sum(1).clamp_min(1)
            nll = -lp.gather(2, tokens[:, 1:, None])[..., 0]
            ce_out.append(((nll * m).sum(1) / denom).double().numpy())
            if hooks:
                base = run_with_hooks(lm.model, tokens).float()[:, :-1].log_softmax(-1)
                kl = (base.exp() * (base - lp)).sum(-1)
                kl_out.append(((kl * m).sum(1) / denom).double().numpy())
            else:
                kl_out.append(np.zeros(len(lengths)))
    return {"ce": np.concatenate(ce_out), "kl": np.concatenate(kl_out)}


def resid_acts(
    lm: LM, texts: Sequence[str], position: int | str = -1, starts: Sequence[int] | None = None, batch_size: int = BATCH
) -> Tensor:
    """Residual stream after every block, (n_layers, N, d_model) float32, read at one position per text.

    position: an int counted from the end of each text (-1 = last token), or "mean" = the mean over the tokens from
    `starts[i]` (e.g. where the response begins) to the end (over every token after BOS when starts is None).
    """
    names = [f"blocks.{i}.hook_resid_post" for i in range(lm.n_layers)]
    out = []
    with torch.no_grad():
        for lo in range(0, len(texts), batch_size):
            tokens, lengths = lm.encode(list(texts[lo : lo + batch_size]))
            _, cache = run_with_cache(lm.model, tokens, names_filter=names)
            acts = torch.stack([cache[n] for n in names]).float()  # (L, B, T, d)
            B, T = tokens.shape
            if position == "mean":
                first = (
                    torch.tensor(list(starts[lo : lo + B]))
                    if starts is not None
                    else torch.full((B,), min(1, T - 1), dtype=torch.long)
                )
                pos = torch.arange(T)[None, :]
                m = ((pos >= first[:, None]) & (pos < lengths[:, None])).float()
                empty = m.sum(1) == 0
                if bool(empty.any()):  # a text shorter than its prompt: fall back on the last token
                    m[empty, (lengths[empty] - 1)] = 1.0
                out.append((acts * m[None, :, :, None]).sum(2) / m.sum(1)[None, :, None])
            else:
                p = int(position)
                idx = lengths + p if p < 0 else torch.full_like(lengths, p)
                if bool(((idx < 0) | (idx >= lengths)).any()):
                    raise WorkbenchError(f"position {p} lies outside a text of {int(lengths.min())} tokens")
                out.append(acts[:, torch.arange(B), idx])
    return torch.cat(out, dim=1)


def greedy(lm: LM, prompts: Sequence[str], max_new: int = 20, fwd_hooks: HookSpec = None) -> list[str]:
    """Greedy continuations (text) of each prompt, stopping at EOS or the context; hooks re-applied every step."""
    out = []
    eos = lm.eos_id
    with torch.no_grad():
        for p in prompts:
            ids = lm.token_ids(p, bos=True)
            new: list[int] = []
            for _ in range(max_new):
                if len(ids) + len(new) >= lm.n_ctx:
                    break
                tokens = torch.tensor([ids + new])
                lengths = _Lengths(torch.tensor([tokens.shape[1]]), torch.tensor([len(ids)]))
                logits = run_with_hooks(lm.model, tokens, fwd_hooks=hooks_for(fwd_hooks, tokens, lengths))
                nxt = int(logits[0, -1].argmax())
                if eos is not None and nxt == eos:
                    break
                new.append(nxt)
            out.append(lm.decode(new) if new else "")
    return out
