"""Goal latents of an SAE at a conv layer (workbench.rl.goal_channels.discover_goal_latents) and retargeting by their
decoder directions (workbench.rl.retarget, `sae=`), on the toy policy of tests/test_retarget.py with a hand-built
SAE whose answer is known: latent j reads channel j, and latent 6 reads the two planted goal channels together."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_retarget import PLANTED, toy_agent
from workbench.errors import WorkbenchError
from workbench.rl.goal_channels import discover_goal_channels, discover_goal_latents
from workbench.rl.retarget import retarget_experiment, unit_edit

GOAL_LATENT = 6


class ToySAE:
    """f = relu(x @ W_enc), x_hat = f @ W_dec over 6-channel tokens: latents 0..5 are the channels, latent 6 is
    (ch2 + ch5) / sqrt 2, latent 7 reads the wall channels 0 and 3."""

    def __init__(self, hook: str = "features") -> None:
        w = torch.zeros(8, 6)
        w[:6, :6] = torch.eye(6)
        w[6, list(PLANTED)] = 1 / math.sqrt(2)
        w[7, [0, 3]] = 1 / math.sqrt(2)
        self.W_dec = w
        self.W_enc = w.T.clone()
        self.dtype = torch.float32
        self.cfg = SimpleNamespace(d_in=6, d_sae=8, metadata=SimpleNamespace(hook_name=hook))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc)


def test_latent_discovery_finds_the_goal_latents():
    agent = toy_agent()
    found = discover_goal_latents(agent, "features", ToySAE(), n_fit=60, seed=0, name="toy")
    assert found.units == "latents" and found.shape[0] == 8 and found.decoder.shape == (8, 6)
    assert set(found.top(3)) == {*PLANTED, GOAL_LATENT}
    assert np.all(found.scores["attribution"][[0, 1, 3, 4, 7]] == 0)  # the head never reads them
    assert found.to_json()["units"] == "latents" and found.to_json()["sae"] == "toy"
    # channel discovery on the same fit mazes is unchanged by the refactor through decision-square gradients
    assert set(discover_goal_channels(agent, "features", n_fit=60, seed=0).top(2)) == set(PLANTED)


def test_latent_edit_is_the_decoder_push():
    agent = toy_agent()
    found = discover_goal_latents(agent, "features", ToySAE(), n_fit=30, seed=0)
    cells = np.array([[3, 4], [5, 6]])
    e = unit_edit(found, [GOAL_LATENT], 2.0, cells, "add")
    assert e.mode == "add" and bool(e.mask.all())
    push = found.sign[GOAL_LATENT] * found.std[GOAL_LATENT] * 2.0
    want = push * ToySAE().W_dec[GOAL_LATENT]
    torch.testing.assert_close(e.values, want.expand(2, 6).float())
    with pytest.raises(WorkbenchError, match="use mode 'add'"):
        unit_edit(found, [GOAL_LATENT], 2.0, cells, "clamp")


def test_sae_retargeting_beats_random_latents(monkeypatch):
    import workbench.sae.train as sae_train

    monkeypatch.setattr(sae_train, "load_sae", lambda name, device="cpu": ToySAE())
    r = retarget_experiment(
        toy_agent(), layer="features", episodes=30, seed=1, n_fit=40, n_boot=2, offsets=(1.0,), magnitudes=(2, 8),
        sae="toy",
    )  # fmt: skip
    assert r["units"] == "latents" and r["sae"] == "toy" and r["mode"] == "add"
    assert GOAL_LATENT in r["set"] or set(PLANTED) <= set(r["set"])
    eff = r["effects"]["discovered_vs_random"]
    assert eff["success"]["ci95"][0] > 0 and eff["path_probability"]["ci95"][0] > 0
    assert r["conditions"]["baseline"]["success"]["rate"] <= 0.2
    with pytest.raises(WorkbenchError, match="use --mode add"):
        retarget_experiment(toy_agent(), layer="features", episodes=5, n_fit=20, mode="clamp", sae="toy")
    with pytest.raises(WorkbenchError, match="latent 9 is out of range"):
        retarget_experiment(toy_agent(), layer="features", episodes=5, n_fit=20, channels=[9], sae="toy")


def test_sae_of_another_layer_is_one_line():
    with pytest.raises(WorkbenchError, match="trained at other.hook, not features; use --layer other.hook"):
        discover_goal_latents(toy_agent(), "features", ToySAE("other.hook"), n_fit=20)
