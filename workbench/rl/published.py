"""Load and save IMPALA policies in the published goal-misgeneralization checkpoint format.

Why: the maze and CoinRun agents of Langosco et al. / Turner et al. ship as torch files holding a dict with
`model_state_dict` (keys `embedder.block{1,2,3}.conv.*`, `embedder.block{b}.res{1,2}.conv{1,2}.*`, `embedder.fc.*`,
`fc_policy.*`, `fc_value.*`). Our `ImpalaPolicy` has exactly that module tree, so a published checkpoint loads into it
with a config (64x64x3 pixels scaled by 1/255, channels 16/32/32 x scale, 15 actions) and every hook name
(`embedder.block2.res1.resadd_out`, ...) means what the published analyses mean by it.

Formats: torch's zip archive (the default since torch 1.6) and torch's legacy format
(`torch.save(..., _use_new_zipfile_serialization=False)`: a pickle stream that starts with torch's magic number, then
tensor storages), in which some published checkpoints were written.

Safety: only `torch.load(..., weights_only=True)`, whose restricted unpickler builds nothing but tensors and plain
containers in both formats. A file that is neither a zip archive nor starts with the legacy magic number is refused
before torch sees it, so nothing is ever unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from workbench.errors import WorkbenchError
from workbench.rl.policies import ImpalaPolicy, PolicyConfig

N_ACTIONS = 15
# torch's legacy format begins with a pickle PROTO opcode (protocol 2 by default; 4 and 5 add an 8-byte FRAME), then
# torch.serialization.MAGIC_NUMBER 0x1950a86a20f9469cfc6c as a LONG1 of 10 little-endian bytes.
LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
LEGACY_PROTOCOLS = (2, 3)  # torch's weights-only unpickler has no FRAME opcode, so protocols 4 and 5 cannot be read


def _sniff(path: Path) -> tuple[str | None, int]:
    """(format, pickle protocol): ("zip", 0), ("legacy", protocol) or (None, 0), from the first bytes only."""
    if zipfile.is_zipfile(path):
        return "zip", 0
    with path.open("rb") as f:
        head = f.read(32)
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return None, 0
    body = head[2:]
    if body[:1] == b"\x95":  # FRAME + 8-byte length (protocol 4+)
        body = body[9:]
    return ("legacy", head[1]) if body.startswith(LEGACY_MAGIC) else (None, 0)


def checkpoint_format(path: str | Path) -> str | None:
    """`zip`, `legacy` (torch's pre-1.6 format, `_use_new_zipfile_serialization=False`) or None for anything else;
    reads only the first bytes."""
    return _sniff(Path(path))[0]


def published_config(scale: int = 1) -> PolicyConfig:
    """The published agents' shape: 64x64x3 input in [0, 255] scaled to [0, 1], channels (16, 32, 32) x scale."""
    if scale < 1:
        raise WorkbenchError(f"channel scale must be >= 1, got {scale}")
    return PolicyConfig(
        in_channels=3,
        obs_size=64,
        channels=(16 * scale, 32 * scale, 32 * scale),
        pool=(True, True, True),
        hidden=256,
        n_actions=N_ACTIONS,
        input_scale=1.0 / 255.0,
    )


def save_published(policy: ImpalaPolicy, path: str | Path) -> Path:
    """Write `{"model_state_dict": ...}` with torch.save (the published format; tensors only). Atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model_state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()}}, tmp)
    tmp.replace(path)
    return path


def load_published(path: str | Path, map_location: str | torch.device = "cpu") -> ImpalaPolicy:
    """A published-format checkpoint as an `ImpalaPolicy` (eval mode). The channel scale is read from
    `embedder.block1.conv.weight`; missing or unexpected keys raise one line listing them."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"checkpoint {str(path)!r} does not exist")
    kind, protocol = _sniff(path)
    if kind is None:
        raise WorkbenchError(
            f"{str(path)!r} is not a torch checkpoint (expected a torch.save zip archive or legacy-format file)"
        )
    if kind == "legacy" and protocol not in LEGACY_PROTOCOLS:
        raise WorkbenchError(
            f"{str(path)!r} is a legacy torch file pickled with protocol {protocol}; weights-only loading reads "
            "protocols 2-3 only: re-save it with torch.save(obj, path) where you trust the file"
        )
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WorkbenchError(f"{str(path)!r} could not be read as a weights-only checkpoint: {first[:200]}") from e
    state = blob.get("model_state_dict") if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        keys = sorted(blob)[:5] if isinstance(blob, dict) else type(blob).__name__
        raise WorkbenchError(f"{str(path)!r} has no 'model_state_dict' dict (found {keys})")
    w = state.get("embedder.block1.conv.weight")
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.shape[0] % 16:
        raise WorkbenchError(
            f"{str(path)!r}: cannot infer the channel scale (embedder.block1.conv.weight must be 16*k x 3 x 3 x 3)"
        )
    policy = ImpalaPolicy(published_config(scale=w.shape[0] // 16))
    expected = set(policy.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise WorkbenchError(f"{str(path)!r} does not match the published IMPALA policy: {'; '.join(parts)}")
    try:
        policy.load_state_dict(state)
    except RuntimeError as e:
        raise WorkbenchError(f"{str(path)!r}: {str(e).splitlines()[0]} (shape mismatch in the state dict)") from e
    return policy.eval()
