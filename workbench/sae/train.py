"""Train SAEs with SAELens's `SAETrainer` on our activation shards; save and load SAELens SAE folders.

Why our own loop around `SAETrainer`: `SAETrainer.fit()` checkpoints with `torch.save` (a pickle), and this project
never pickles. `SAETrainer` exposes the seams `fit()` itself uses (`maybe_reset_sparsity`, `step`,
`set_final_sae_metadata`), so the loop below is `fit()`'s loop with safetensors checkpoints: the SAE's state, Adam's
moments and the dead-latent counters go to `checkpoint.safetensors`, the counters to `checkpoint.json`. On resume the
learning-rate and coefficient schedules are replayed step by step and the data provider skips the batches already
seen, so an interrupted run ends where an uninterrupted one would.

The shipped folder is what `sae_lens.SAE.load_from_disk(folder)` reads: `cfg.json` + `sae_weights.safetensors`
written by SAELens's `save_inference_model` (a BatchTopK SAE is saved as the JumpReLU SAE it becomes at inference).
Our extra files (`card.md`, `metrics.json`, ...) sit beside them; SAELens ignores them (tested). The workbench's own
facts (hook, layout, activation shape, subject, training spec) ride in `cfg.json`'s `metadata`, which SAELens keeps.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from workbench import artifacts
from workbench.errors import WorkbenchError, unknown
from workbench.sae.data import LAYOUTS, ShardTokens, token_dim

ARCHS = ("topk", "batchtopk", "jumprelu", "standard")
NORMALIZATIONS = ("none", "expected_average_only_in")
SAE_CFG, SAE_WEIGHTS = "cfg.json", "sae_weights.safetensors"
CKPT_WEIGHTS, CKPT_STATE = "checkpoint.safetensors", "checkpoint.json"


@dataclass
class SAESpec:
    """Everything that defines one SAE training run (one dataclass, CleanRL style).

    arch: topk | batchtopk | jumprelu | standard (L1). width: number of latents (d_sae). k: active latents per
    token (topk) or on average (batchtopk); ignored by the others. l1_coefficient (standard) and l0_coefficient
    (jumprelu) set their sparsity penalties. tokens: total training tokens; batch_size: tokens per step.
    layout: "position" (one token per spatial position / sequence position) or "flat". normalize:
    "expected_average_only_in" rescales inputs to norm sqrt(d_in) during training (folded into the weights at the
    end) -- useful when activation scales differ a lot between layers.
    """

    arch: str = "topk"
    width: int = 64
    k: int | None = None
    l1_coefficient: float = 1.0
    l0_coefficient: float = 1.0
    lr: float = 1e-3
    tokens: int = 2_000_000
    batch_size: int = 2048
    layout: str = "position"
    normalize: str = "none"
    dead_feature_window: int = 500
    seed: int = 0

    def validate(self, d_in: int) -> None:
        """Raise WorkbenchError (one line) for a spec that cannot make sense for inputs of dimension `d_in`."""
        if self.arch not in ARCHS:
            raise unknown("SAE architecture", self.arch, ARCHS)
        if self.layout not in LAYOUTS:
            raise unknown("layout", self.layout, LAYOUTS)
        if self.normalize not in NORMALIZATIONS:
            raise unknown("normalization", self.normalize, NORMALIZATIONS)
        if int(self.width) < 2:
            raise WorkbenchError(f"width must be >= 2 latents, got {self.width}")
        if self.arch in ("topk", "batchtopk"):
            k = self.k if self.k is not None else 0
            if not 1 <= k < self.width:
                raise WorkbenchError(
                    f"k must be in [1, width) = [1, {self.width}) for a {self.arch} SAE, got {self.k}: "
                    "k >= width keeps every latent, so nothing is sparse"
                )
        elif self.k is not None:
            raise WorkbenchError(f"k applies to topk and batchtopk SAEs only, not {self.arch!r} (leave it unset)")
        for name in ("lr", "l1_coefficient", "l0_coefficient"):
            if not float(getattr(self, name)) > 0:
                raise WorkbenchError(f"{name} must be > 0, got {getattr(self, name)}")
        if int(self.batch_size) < 1 or int(self.tokens) < int(self.batch_size):
            raise WorkbenchError(
                f"need batch_size >= 1 and tokens >= batch_size, got batch_size={self.batch_size}, tokens={self.tokens}"
            )
        if d_in < 1:
            raise WorkbenchError(f"d_in must be >= 1, got {d_in}")

    @property
    def steps(self) -> int:
        return int(self.tokens) // int(self.batch_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SAESpec:
        names = {f.name for f in fields(cls)}
        bad = [k for k in data if k not in names]
        if bad:
            raise unknown("SAE spec key", bad[0], names)
        return cls(**data)


def training_sae(spec: SAESpec, d_in: int, metadata: dict[str, Any] | None = None):
    """A fresh SAELens training SAE for `spec` (weights drawn under `torch.manual_seed(spec.seed)`)."""
    from sae_lens.saes import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    spec.validate(d_in)
    common = {"d_in": int(d_in), "d_sae": int(spec.width), "normalize_activations": spec.normalize}
    if spec.arch == "topk":
        cls, cfg = TopKTrainingSAE, TopKTrainingSAEConfig(k=int(spec.k or 0), **common)
    elif spec.arch == "batchtopk":
        cls, cfg = BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig(k=float(spec.k or 0), **common)
    elif spec.arch == "jumprelu":
        cls, cfg = JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig(l0_coefficient=spec.l0_coefficient, **common)
    else:
        cls, cfg = StandardTrainingSAE, StandardTrainingSAEConfig(l1_coefficient=spec.l1_coefficient, **common)
    for key, value in (metadata or {}).items():
        cfg.metadata[key] = value
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        return cls(cfg)


def _trainer(spec: SAESpec, sae, provider: ShardTokens):
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    cfg = SAETrainerConfig(
        total_training_samples=spec.steps * int(spec.batch_size),
        train_batch_size_samples=int(spec.batch_size),
        lr=spec.lr,
        lr_end=spec.lr,
        dead_feature_window=spec.dead_feature_window,
        feature_sampling_window=max(spec.steps, 1),
        n_batches_for_norm_estimate=20,
    )
    return SAETrainer(cfg, sae, provider)


# ------------------------------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(folder: Path, trainer, spec: SAESpec, fingerprint: dict) -> None:
    """SAE + Adam state + counters as safetensors/JSON, written atomically (a crash keeps the previous one)."""
    with artifacts.writing(folder) as tmp:
        tensors = {f"sae.{k}": v.detach().contiguous() for k, v in trainer.sae.state_dict().items()}
        for i, state in trainer.optimizer.state_dict()["state"].items():
            for name, value in state.items():
                tensors[f"optim.{i}.{name}"] = torch.as_tensor(value).detach().contiguous()
        tensors["trainer.act_freq_scores"] = trainer.act_freq_scores.contiguous()
        tensors["trainer.n_forward_passes_since_fired"] = trainer.n_forward_passes_since_fired.contiguous()
        save_file(tensors, str(tmp / CKPT_WEIGHTS))
        state = {
            "spec": spec.to_dict(),
            "fingerprint": fingerprint,
            "n_training_steps": trainer.n_training_steps,
            "n_training_samples": trainer.n_training_samples,
            "n_frac_active_samples": trainer.n_frac_active_samples,
            "scaling_factor": trainer.activation_scaler.scaling_factor,
        }
        artifacts.write_json(tmp / CKPT_STATE, state)


def _load_checkpoint(folder: Path, trainer, spec: SAESpec, fingerprint: dict) -> None:
    try:
        state = json.loads((folder / CKPT_STATE).read_text())
        tensors = load_file(str(folder / CKPT_WEIGHTS))
    except Exception as err:
        raise WorkbenchError(f"{folder}: unreadable SAE checkpoint ({err}); delete it to start over") from None
    if state.get("spec") != spec.to_dict() or state.get("fingerprint") != fingerprint:
        raise WorkbenchError(
            f"{folder}: checkpoint was made for a different spec or dataset; delete it or drop --resume"
        )
    trainer.sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
    opt = trainer.optimizer.state_dict()
    per: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            per.setdefault(int(i), {})[name] = value
    trainer.optimizer.load_state_dict({"state": per, "param_groups": opt["param_groups"]})
    trainer.act_freq_scores = tensors["trainer.act_freq_scores"]
    trainer.n_forward_passes_since_fired = tensors["trainer.n_forward_passes_since_fired"]
    trainer.n_training_steps = int(state["n_training_steps"])
    trainer.n_training_samples = int(state["n_training_samples"])
    trainer.n_frac_active_samples = int(state["n_frac_active_samples"])
    trainer.activation_scaler.scaling_factor = state["scaling_factor"]
    with warnings.catch_warnings():  # torch warns that the optimizer has not stepped yet: intended, we replay
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(trainer.n_training_steps):  # replay the schedules (constant lr: a no-op, warm-ups: exact)
            trainer.lr_scheduler.step()
            for scheduler in trainer.coefficient_schedulers.values():
                scheduler.step()


# ---------------------------------------------------------------------------------------------------------- training
def train_sae(
    ds,
    hook: str,
    spec: SAESpec,
    out: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 200,
    resume: bool = False,
    progress: bool = True,
):
    """Train an SAE on `ds[hook]` (an `ActivationDataset`) with SAELens's trainer; returns the inference SAE.

    Tokens come from `ShardTokens(ds, hook, spec.batch_size, spec.layout, spec.seed)`. With `checkpoint_dir`, a
    checkpoint is written every `checkpoint_every` steps and `resume=True` continues from it. With `out`, the SAE
    folder (SAELens format) is written there atomically; the returned SAE is always the one loaded back from that
    folder by `SAE.load_from_disk`, i.e. exactly what ships. `metadata` goes into cfg.json's metadata.
    """
    from sae_lens import SAE

    if hook not in ds.shapes:
        raise unknown("hook", hook, ds.hooks)
    shape = tuple(ds.shapes[hook])
    d_in = token_dim(shape, spec.layout)
    spec.validate(d_in)
    provider = ShardTokens(ds, hook, spec.batch_size, spec.layout, spec.seed)
    meta = {
        "hook_name": hook,
        "workbench": {
            "layout": spec.layout,
            "act_shape": list(shape),
            "spec": spec.to_dict(),
            "dataset": (ds.meta.get("source") or {}).get("description"),
            "dataset_rows": len(ds),
            **(metadata or {}).get("workbench", {}),
        },
        **{k: v for k, v in (metadata or {}).items() if k != "workbench"},
    }
    sae = training_sae(spec, d_in, meta)
    trainer = _trainer(spec, sae, provider)
    fingerprint = {"hook": hook, "rows": len(ds), "shape": list(shape), "dataset": meta["workbench"]["dataset"]}
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume:
        if ckpt is None or not (ckpt / CKPT_STATE).is_file():
            raise WorkbenchError(f"nothing to resume: no SAE checkpoint in {ckpt}")
        _load_checkpoint(ckpt, trainer, spec, fingerprint)
        provider.skip(trainer.n_training_steps)
    elif spec.normalize == "expected_average_only_in":
        # Estimated on a separate provider, so the training batch sequence does not depend on the estimate.
        est = ShardTokens(ds, hook, spec.batch_size, spec.layout, spec.seed + 1)
        trainer.activation_scaler.estimate_scaling_factor(d_in, est, trainer.cfg.n_batches_for_norm_estimate)
    total = spec.steps
    with tqdm(
        total=total, initial=trainer.n_training_steps, desc="train SAE", unit="step", disable=not progress
    ) as bar:
        while trainer.n_training_steps < total:
            trainer.maybe_reset_sparsity()
            output = trainer.step(next(provider))
            trainer.n_training_steps += 1
            bar.update(1)
            if trainer.n_training_steps % 50 == 0 or trainer.n_training_steps == total:
                bar.set_postfix({k: f"{float(v.detach()):.4g}" for k, v in output.losses.items()})
            if ckpt is not None and trainer.n_training_steps % max(int(checkpoint_every), 1) == 0:
                _save_checkpoint(ckpt, trainer, spec, fingerprint)
    if trainer.activation_scaler.scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trainer.activation_scaler.scaling_factor = None
    trainer.set_final_sae_metadata()
    if out is None:
        with tempfile.TemporaryDirectory() as tmp:
            sae.save_inference_model(tmp)
            return SAE.load_from_disk(tmp)
    folder = Path(out)
    with artifacts.writing(folder) as tmp:
        sae.save_inference_model(tmp)
    return load_sae(folder)


# ------------------------------------------------------------------------------------------------------ load / save
def available_saes() -> list[str]:
    """Names of the SAE folders under artifacts/saes that hold a cfg.json (hidden `.NAME.xxxx` folders, left by an
    interrupted write, are not SAEs)."""
    root = artifacts.artifacts_root() / "saes"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / SAE_CFG).is_file())


def resolve_sae(name_or_path: str | Path) -> Path:
    """An SAE folder from a registered name (artifacts/saes/NAME) or a path; unknown names get the closest ones."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    candidate = artifacts.artifacts_root() / "saes" / str(name_or_path)
    if candidate.is_dir():
        return candidate
    names = available_saes()
    if not names:
        raise WorkbenchError(f"unknown SAE {str(name_or_path)!r}: no SAEs in {artifacts.artifacts_root() / 'saes'}")
    raise unknown("SAE", str(name_or_path), names)


def load_sae(name_or_path: str | Path, device: str = "cpu"):
    """Load a SAELens SAE folder (by name or path) with `SAE.load_from_disk`; a broken folder gets one precise line."""
    from sae_lens import SAE

    folder = resolve_sae(name_or_path)
    cfg_path, weights = folder / SAE_CFG, folder / SAE_WEIGHTS
    for path in (cfg_path, weights):
        if not path.is_file():
            raise WorkbenchError(f"{folder} is not an SAE folder: {path.name} missing")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"{cfg_path}: unreadable SAE config ({err})") from None
    if not isinstance(cfg, dict) or "architecture" not in cfg or "d_in" not in cfg or "d_sae" not in cfg:
        raise WorkbenchError(f"{cfg_path}: not a SAELens SAE config (needs architecture, d_in, d_sae)")
    try:
        sae = SAE.load_from_disk(folder, device=device)
    except Exception as err:  # SAELens / safetensors / torch raise their own types for corrupt or mismatched files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkbenchError(f"{folder}: SAE weights do not load ({first[:200]})") from None
    sae.eval()
    return sae


def sae_info(sae) -> dict:
    """The workbench facts stored in an SAE's metadata: hook, layout, act_shape, spec, subject."""
    meta = sae.cfg.metadata
    wb = dict(meta.get("workbench") or {})
    return {
        "hook": meta.get("hook_name"),
        "subject": meta.get("model_name"),
        "layout": wb.get("layout", "position"),
        "act_shape": tuple(wb.get("act_shape") or ()),
        "architecture": sae.cfg.architecture(),
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        **{k: v for k, v in wb.items() if k not in ("layout", "act_shape")},
    }


def save_sae(sae, folder: str | Path, files: dict[str, str | bytes] | None = None) -> Path:
    """Write an inference SAE (SAELens format) plus extra `files` {name: text or bytes} atomically into `folder`."""
    folder = Path(folder)
    with artifacts.writing(folder) as tmp:
        sae.save_model(tmp)
        for name, content in (files or {}).items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
    return folder


def size_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


__all__ = [
    "ARCHS",
    "SAESpec",
    "available_saes",
    "load_sae",
    "resolve_sae",
    "sae_info",
    "save_sae",
    "size_bytes",
    "train_sae",
    "training_sae",
]
