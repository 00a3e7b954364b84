"""Subjects an SAE can be trained on: one small interface over a maze policy and a TransformerLens language model.

Why an interface: training, evaluation, feature analysis and the CLI should not care whether activations come from a
conv policy rolling out in a maze or from an LM reading dialogues. A subject says which hooks it has, how to collect
a labelled `ActivationDataset` at them, and how to measure downstream fidelity with an SAE spliced in. Adding an
organism (CoinRun, another LM) is one class with those three methods plus a line in `load_subject`.

- `PolicySubject` (alias `MazeSubject`; every RL agent): `collect` = the kind's collect verb (rollout states by
  default, so the SAE sees the states the policy visits); fidelity = goal rates and the kind's scalar score (its
  feature views' `score`: the maze's discounted return; else the first goal rate) on train and ood levels, original
  vs spliced vs mean-ablated, same levels and action seed, with Wilson / paired-bootstrap CIs.
- `LMSubject`: `collect` = `collect_prompts(..., positions="all")` on prompts from a prompt source; fidelity =
  next-token cross-entropy original vs spliced vs zero-ablated, and the fraction of CE recovered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from workbench.errors import unknown
from workbench.hooks import hook_names, run_with_hooks
from workbench.interventions import patch_with, sae_splice
from workbench.metrics import bootstrap_ci, paired_diff_ci, rate
from workbench.sae.metrics import fraction_recovered

PromptSource = Callable[[str, int, int], tuple[Tensor, Tensor, pd.DataFrame]]
"""(split, n, seed) -> (tokens (n, T) int64 right-padded, lengths (n,), labels DataFrame with n rows)."""


def check_hook(model: nn.Module, hook: str) -> None:
    names = hook_names(model)
    if hook not in names:
        raise unknown("hook", hook, names)


def _ablation_hook(mean: Tensor):
    """Replace the activation by a fixed per-example mean (broadcast over the batch): mean ablation."""

    def hook_fn(act: Tensor, hook) -> Tensor:
        return patch_with(mean.to(act.dtype).expand_as(act).contiguous())(act, hook)

    return hook_fn


# ---------------------------------------------------------------------------------------------------------- policy
@dataclass
class PolicySubject:
    """A trained RL agent (`workbench.load_agent`: maze or CoinRun) as an SAE subject."""

    agent: Any

    @property
    def kind(self) -> str:
        return self.agent.env_kind

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def model(self) -> nn.Module:
        return self.agent.policy

    def hooks(self) -> list[str]:
        return hook_names(self.agent.policy)

    def check_hook(self, hook: str) -> None:
        check_hook(self.agent.policy, hook)

    def collect(
        self,
        hooks: str | Sequence[str],
        split: str = "ood",
        n: int = 1000,
        seed: int = 0,
        states: str = "rollout",
        max_states_per_episode: int | None = 32,
        out: str | Path | None = None,
        progress: bool = True,
    ):
        """Labelled activations at `hooks` over `n` levels, through the subject kind's `collect` verb (maze:
        `collect_maze`, CoinRun: `collect_coinrun`, keys-chests, colour-shape, any registered kind: its own); rollout
        states by default, so the SAE sees the states the policy actually visits. A kind without a `collect` verb
        is one line naming the verbs it has."""
        from workbench.subjects import verb

        if states == "rollout" and not self.agent.world.rollout_states:
            states = "start"  # procgen levels give start states only
        return verb(self.agent, "collect")(
            self.agent,
            hooks=[hooks] if isinstance(hooks, str) else list(hooks),
            split=split,
            episodes=n,
            seed=seed,
            states=states,
            max_states_per_episode=max_states_per_episode if states == "rollout" else None,
            out=out,
            progress=progress,
        ).value

    def fidelity(
        self, sae, hook: str, splits: Sequence[str] = ("train", "ood"), episodes: int = 500, seed: int = 0
    ) -> dict:
        """Per split: every goal rate the env records (maze: cheese, corner_first, timeout; CoinRun: coin, exit, ...)
        and the kind's scalar score, for the original policy, the policy with the SAE's reconstruction spliced in at
        `hook`, and the policy with `hook` mean-ablated (mean over start states of the split), all on the same levels
        and action seed; paired differences vs the original with bootstrap CIs; and the fraction recovered =
        (spliced - ablated) / (original - ablated) of the score. Score and ablation mean come from the kind's
        feature views (`FeatureViews.score`, `.ablation_mean`: the maze's discounted return over its levels' start
        states); a kind without them scores its first goal rate against the collector's start-state mean."""
        from workbench.sae.views import find_views, first_goal_score, start_state_mean

        self.check_hook(hook)
        views = find_views(self)
        score = (views and views.score) or first_goal_score
        ablation_mean = (views and views.ablation_mean) or start_state_mean
        world, policy = self.agent.world, self.agent.policy
        gamma = float((self.agent.config or {}).get("ppo", {}).get("gamma", 0.99))
        out: dict = {"episodes": int(episodes), "seed": int(seed), "gamma": gamma}
        for split in splits:
            levels = world.levels(split, int(episodes), seed)
            mean = ablation_mean(self, levels, hook, split=split, seed=seed)
            conds = {
                "original": [],
                "spliced": [(hook, sae_splice(sae))],
                "mean_ablated": [(hook, _ablation_hook(mean))],
            }
            recs = {name: world.run(policy, levels, seed=seed, fwd_hooks=h) for name, h in conds.items()}
            flags = {name: r.flags() for name, r in recs.items()}
            keys = list(flags["original"])
            scored = {name: score(r, gamma) for name, r in recs.items()}
            scores: dict[str, np.ndarray] = {name: np.asarray(v, dtype=np.float64) for name, (_, v) in scored.items()}
            row: dict = {"goal_keys": keys, "score": scored["original"][0]}
            for name in recs:
                row[name] = {k: rate(flags[name][k]) for k in keys}
                sc = scores[name]
                row[name]["return"] = {"mean": float(sc.mean()), "ci95": list(bootstrap_ci(sc, seed=seed))}
            for name in ("spliced", "mean_ablated"):
                d = scores[name] - scores["original"]
                row[name]["diff_vs_original"] = {
                    **{k: paired_diff_ci(flags["original"][k], flags[name][k], seed) for k in keys},
                    "return": {"diff": float(d.mean()), "ci95": list(bootstrap_ci(d, seed=seed))},
                }
            row["return_recovered"] = fraction_recovered(
                row["original"]["return"]["mean"],
                row["spliced"]["return"]["mean"],
                row["mean_ablated"]["return"]["mean"],
            )
            out[split] = row
        return out


MazeSubject = PolicySubject
"""The maze agent subject (the same class serves CoinRun agents)."""


# -------------------------------------------------------------------------------------------------------------- LM
LossMask = Callable[[Tensor, Tensor], Tensor]
"""(tokens (N, T), lengths (N,)) -> (N, T) bool: the target tokens the model's loss is taken on."""


def _token_ce(
    model: nn.Module, tokens: Tensor, lengths: Tensor, fwd_hooks: list, loss_mask: LossMask | None = None
) -> np.ndarray:
    """(N,) mean next-token cross-entropy per prompt over its real target positions (only those where
    `loss_mask(tokens, lengths)` is True, when given), with `fwd_hooks` attached."""
    with torch.no_grad():
        logits = run_with_hooks(model, tokens, fwd_hooks=fwd_hooks)
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    nll = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    mask = torch.arange(tokens.shape[1] - 1)[None, :] < (lengths[:, None] - 1)
    if loss_mask is not None:
        mask = mask & loss_mask(tokens, lengths)[:, 1:]
    return ((nll * mask).sum(1) / mask.sum(1).clamp_min(1)).numpy()


@dataclass
class LMSubject:
    """A token model (a TransformerLens HookedTransformer) with a prompt source, as an SAE subject."""

    model: nn.Module
    prompts: PromptSource
    name: str = "lm"
    kind: str = "lm"
    lm: Any = None
    """The `workbench.lm.model.LM` (tokenizer, corpus config) when the subject is a workbench LM artifact: the
    persona analyses (`workbench.sae.lm_analysis`) need it; None for a bare HookedTransformer."""
    loss_mask: LossMask | None = None
    """Which target tokens fidelity's cross-entropy counts (None: all real ones). The persona LM is trained on its
    replies only (`workbench.lm.evaluate.reply_mask`): its user turns hold random numbers no model predicts, so CE
    over them would measure noise, not what the model does."""

    def hooks(self) -> list[str]:
        return hook_names(self.model)

    def check_hook(self, hook: str) -> None:
        check_hook(self.model, hook)

    def collect(
        self,
        hooks: str | Sequence[str],
        split: str = "train",
        n: int = 500,
        seed: int = 0,
        out: str | Path | None = None,
        progress: bool = True,
        **_: Any,
    ):
        """Activations at every real position of `n` prompts (`collect_prompts(..., positions="all")`)."""
        from workbench.data.prompts import collect_prompts

        tokens, lengths, labels = self.prompts(split, int(n), int(seed))
        return collect_prompts(
            self.model, tokens, labels, hooks, positions="all", out=out, seed=seed, progress=progress, lengths=lengths
        )

    def fidelity(
        self, sae, hook: str, splits: Sequence[str] = ("train", "ood"), episodes: int = 200, seed: int = 0
    ) -> dict:
        """Per split: mean next-token CE (original, SAE spliced, zero-ablated) over `episodes` prompts, and CE
        recovered = (CE_zero - CE_spliced) / (CE_zero - CE_original), with paired-bootstrap CIs over prompts."""
        self.check_hook(hook)

        def zero(act: Tensor, hook) -> Tensor:
            return torch.zeros_like(act)

        out: dict = {
            "prompts": int(episodes),
            "seed": int(seed),
            "tokens": "all" if self.loss_mask is None else "loss mask (assistant replies)",
        }
        for split in splits:
            tokens, lengths, _ = self.prompts(split, int(episodes), int(seed))
            m = self.loss_mask
            ce = {
                "original": _token_ce(self.model, tokens, lengths, [], m),
                "spliced": _token_ce(self.model, tokens, lengths, [(hook, sae_splice(sae))], m),
                "zero_ablated": _token_ce(self.model, tokens, lengths, [(hook, zero)], m),
            }
            row: dict = {k: {"mean": float(v.mean()), "ci95": list(bootstrap_ci(v, seed=seed))} for k, v in ce.items()}
            d = ce["spliced"] - ce["original"]
            row["spliced"]["diff_vs_original"] = {"diff": float(d.mean()), "ci95": list(bootstrap_ci(d, seed=seed))}
            # recovered is higher-is-better on -CE
            row["ce_recovered"] = fraction_recovered(
                -row["original"]["mean"], -row["spliced"]["mean"], -row["zero_ablated"]["mean"]
            )
            out[split] = row
        return out


def persona_prompts(lm) -> PromptSource:
    """Prompt source over the persona corpus (`workbench.lm.corpus`): full dialogues with their labels."""
    from workbench.lm import corpus
    from workbench.lm.evaluate import corpus_config

    cfg = corpus_config(lm)  # the artifact's own corpus (its operand range is its vocabulary's numbers)

    def source(split: str, n: int, seed: int) -> tuple[Tensor, Tensor, pd.DataFrame]:
        examples = corpus.generate(split, n, seed, cfg)
        tokens, lengths = lm.encode([e.text for e in examples])
        return tokens, lengths, corpus.table(examples)

    return source


def lm_subject(lm) -> LMSubject:
    """A workbench persona LM (`workbench.lm.model.LM`) as a subject: its own corpus as prompts, CE on its replies."""
    from workbench.lm.evaluate import reply_mask

    return LMSubject(lm.model, persona_prompts(lm), name=lm.name, lm=lm, loss_mask=lambda t, n: reply_mask(t, n, lm))


def load_subject(name_or_path: str | Path, env: str | None = None):
    """An SAE subject for any subject reference (`workbench.subjects.load_subject`): a `PolicySubject` for RL
    agents (native or procgen; `env` names a bare checkpoint's kind), an `LMSubject` for language models."""
    from workbench.subjects import load_subject as load

    subject = load(name_or_path, env=env)
    if getattr(subject, "world", None) is not None:
        return PolicySubject(subject)
    return lm_subject(subject)
