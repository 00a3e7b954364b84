"""IMPALA-style actor-critic policies whose module tree matches the published goal-misgeneralization checkpoints.

Why this exact tree: analyses in the literature name layers like `embedder.block2.res1.resadd_out`. Keeping the names
(`embedder.block{1,2,3}.conv`, `.res{1,2}.conv{1,2}`, `embedder.fc`, `fc_policy`, `fc_value`) means a hook name, a
probe recipe or a steering vector written for one policy reads the same on every other, native or procgen.
Each residual add goes through a `HookPoint` named `resadd_out`, so the sum itself is hookable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from workbench.hooks import HookPoint, name_hook_points


@dataclass(frozen=True)
class PolicyConfig:
    """Shape of an IMPALA policy. `pool[i]` says whether block i+1 halves the spatial size (maxpool 3, stride 2);
    native symbolic mazes keep block1 at full resolution so spatial probes see one activation per maze cell."""

    in_channels: int = 3
    obs_size: int = 15
    channels: tuple[int, ...] = (16, 32, 32)
    pool: tuple[bool, ...] = (True, True, True)
    hidden: int = 256
    n_actions: int = 4
    input_scale: float = 1.0  # multiply observations by this (1/255 for pixels)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "pool", tuple(bool(p) for p in self.pool))
        if len(self.channels) != len(self.pool):
            from workbench.errors import WorkbenchError

            raise WorkbenchError(f"policy channels {self.channels} and pool {self.pool} must have the same length")

    def to_dict(self) -> dict:
        return asdict(self)


class MaxPool(nn.MaxPool2d):
    """`nn.MaxPool2d` that pools a channels-first batch in the channels-last layout and hands it back channels-first.

    Why: torch's CPU max-pool on a contiguous (B, C, H, W) batch is several times slower than on the same values laid
    out channels-last, and it was the largest cost after the convolutions in a rollout's forward (benchmarks/run.py,
    core section, times the forward both ways). A maximum does no arithmetic, so the output is bit-identical whatever
    the layout; the result is returned in the input's layout, so hooks and later layers see exactly what they saw
    before. Only without autograd: with gradients the two kernels may break a tie in a window differently and route
    the gradient to another input, so training keeps torch's own path (and PPO resumes stay bit-identical)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = (
            x.dim() != 4
            or x.device.type != "cpu"
            or (x.requires_grad and torch.is_grad_enabled())
            or not x.is_contiguous()
            or x.is_contiguous(memory_format=torch.channels_last)  # already channels-last (or a 1x1 map)
        )
        if plain:
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class ResidualBlock(nn.Module):
    """relu -> conv1 -> relu -> conv2, added to the input through the `resadd_out` hook point."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.resadd_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(x))
        out = self.conv2(torch.relu(out))
        return self.resadd_out(x + out)


class ImpalaBlock(nn.Module):
    """conv -> (maxpool) -> two residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.maxpool = MaxPool(kernel_size=3, stride=2, padding=1) if pool else nn.Identity()
        self.res1 = ResidualBlock(out_channels)
        self.res2 = ResidualBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.res1(self.maxpool(self.conv(x))))


class ImpalaEmbedder(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        size, chans = cfg.obs_size, cfg.in_channels
        for i, (out, pool) in enumerate(zip(cfg.channels, cfg.pool, strict=True), start=1):
            setattr(self, f"block{i}", ImpalaBlock(chans, out, pool))
            chans, size = out, (size + 1) // 2 if pool else size
        self.n_blocks = len(cfg.channels)
        self.relu3 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(chans * size * size, cfg.hidden)
        self.relufc = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        return self.relufc(self.fc(self.flatten(self.relu3(x))))


class ImpalaPolicy(nn.Module):
    """Actor-critic: obs (B, C, H, W) -> (logits (B, A), value (B,))."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedder = ImpalaEmbedder(cfg)
        self.fc_policy = nn.Linear(cfg.hidden, cfg.n_actions)
        self.fc_value = nn.Linear(cfg.hidden, 1)
        name_hook_points(self)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float()
        if self.cfg.input_scale != 1.0:
            x = x * self.cfg.input_scale
        h = self.embedder(x)
        return self.fc_policy(h), self.fc_value(h).squeeze(-1)

    def action_probs(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, A) action probabilities; the policy's whole behaviour at these observations."""
        return torch.softmax(self(obs)[0], dim=-1)
