"""SAEs trained elsewhere (SAELens folders) on an LM hook: check they fit the model before anything runs.

Why a check of its own: a SAELens folder says which hook it reads (`metadata.hook_name`, or `hook_name` in older
configs) and its input width `d_in`, but nothing stops it being pointed at another model. A mismatch then fails
deep inside an encode with a shape error. `check_lm_sae` runs the model for one token, reads the hook's real
width, and turns a mismatch into one line naming both widths; `load_lm_sae` then loads the SAE through
`workbench.sae.load_sae` (SAELens's `SAE.load_from_disk`, safetensors only -- a folder with only pickled weights is
refused, never opened).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError, unknown
from workbench.hooks import run_with_cache
from workbench.lm.model import LM

SAE_CFG, SAE_WEIGHTS = "cfg.json", "sae_weights.safetensors"
PICKLED = ("sae_weights.pt", "sae_weights.pth", "sae_weights.bin", "sae.pt")


def read_sae_cfg(folder: str | Path) -> dict:
    """The folder's cfg.json (a SAELens SAE folder); missing or pickled-only weights are one line naming the file."""
    folder = Path(folder)
    cfg_path = folder / SAE_CFG
    if not cfg_path.is_file():
        raise WorkbenchError(f"{cfg_path}: missing (not a SAELens SAE folder)")
    if not (folder / SAE_WEIGHTS).is_file():
        pickled = [p for p in PICKLED if (folder / p).is_file()]
        if pickled:
            raise WorkbenchError(
                f"{folder / pickled[0]}: pickled SAE weights are refused (unpickling can run code); save it with "
                "SAELens's `sae.save_model(FOLDER)` (safetensors)"
            )
        raise WorkbenchError(f"{folder / SAE_WEIGHTS}: missing (the SAE's weights)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"{cfg_path}: unreadable SAE config ({err})") from None
    if not isinstance(cfg, dict) or "d_in" not in cfg or "d_sae" not in cfg:
        raise WorkbenchError(f"{cfg_path}: not a SAELens SAE config (needs d_in and d_sae)")
    return cfg


def sae_hook_name(cfg: dict) -> str | None:
    """The hook a SAELens config reads: `metadata.hook_name` (SAELens 6) or a top-level `hook_name` (older)."""
    return (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")


def hook_width(lm: LM, hook: str) -> int:
    """The last-axis width of `hook` in this model (for `hook_z`-style (.., H, d_head) hooks: H * d_head), from a
    one-token forward; an unknown hook is a WorkbenchError with the nearest hook names."""
    names = list(lm.model.hook_dict)
    if hook not in names:
        raise unknown("hook", hook, names)
    tokens = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        _, cache = run_with_cache(lm.model, tokens, names_filter=hook)
    act = cache[hook]
    return int(act.shape[-1] * act.shape[-2]) if act.ndim == 4 else int(act.shape[-1])


def check_lm_sae(folder: str | Path, lm: LM, hook: str | None = None) -> dict[str, Any]:
    """Check that the SAE in `folder` fits `lm` at `hook` (default: the hook its config names). Returns
    {"hook", "d_in", "d_sae", "width"}; a width mismatch is one line naming both widths."""
    folder = Path(folder)
    cfg = read_sae_cfg(folder)
    hook = hook or sae_hook_name(cfg)
    if not hook:
        raise WorkbenchError(f"{folder / SAE_CFG}: names no hook (metadata.hook_name); pass the hook to read")
    width = hook_width(lm, hook)
    d_in = int(cfg["d_in"])
    if d_in != width:
        raise WorkbenchError(
            f"{folder}: the SAE reads d_in = {d_in} but {hook} of {lm.name} has width {width}; it was trained on "
            "another model or hook"
        )
    return {"hook": hook, "d_in": d_in, "d_sae": int(cfg["d_sae"]), "width": width}


def load_lm_sae(folder: str | Path, lm: LM, hook: str | None = None, device: str = "cpu"):
    """A SAELens SAE folder trained elsewhere, checked against `lm` at its hook, loaded (SAELens `SAE`). The
    returned SAE's `cfg.metadata.hook_name` is set to the hook checked, so `workbench.sae_splice` and the Features
    page read the right place."""
    from workbench.sae.train import load_sae

    info = check_lm_sae(folder, lm, hook)
    sae = load_sae(Path(folder), device=device)
    try:
        sae.cfg.metadata.hook_name = info["hook"]
    except (AttributeError, TypeError):
        pass
    return sae
