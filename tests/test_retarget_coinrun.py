"""CoinRun retargeting (workbench.rl.coinrun.retarget): the invisible coin, the push in view coordinates, and the
`workbench retarget` command on a tiny random CoinRun agent (tests/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from workbench.rl.coinrun.retarget import COINRUN_CONDITIONS, _InvisibleCoin


class _Spy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen = None

    def forward(self, x):
        self.seen = x.clone()
        return torch.zeros(x.shape[0], 6)


def test_invisible_coin_blanks_the_plane_and_finds_the_view_cell():
    obs = torch.zeros(3, 5, 13, 13, dtype=torch.uint8)
    obs[0, 2, 4, 9] = 1  # coin in view at (4, 9): layer cell (2, 4) on a 7x7 grid
    obs[1, 2, 12, 0] = 1  # coin in view, shown to the policy (hide is False)
    obs[:, 0, 12, :] = 1  # ground
    spy = _Spy()
    wrap = _InvisibleCoin(spy, np.array([True, False, True]), view=6, grid=7)
    wrap(obs)
    assert wrap.visible.tolist() == [True, True, False]
    assert wrap.cell[0].tolist() == [2, 4] and wrap.cell[1].tolist() == [6, 0]
    assert spy.seen[0, 2].sum() == 0 and spy.seen[1, 2].sum() == 1  # hidden row blanked, shown row intact
    assert torch.equal(spy.seen[:, 0], obs[:, 0])  # nothing else touched


def test_coinrun_retarget_command(coinrun_registry, cli):
    code, out, err = cli(
        "retarget", "tiny-coinrun", "--episodes", "20", "--n-fit", "12", "--n-boot", "2", "--magnitudes", "4",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(out)
    assert r["subject_kind"] == "coinrun" and r["layer"] == "embedder.block1.res2.resadd_out" and r["mode"] == "add"
    assert set(r["conditions"]) == set(COINRUN_CONDITIONS) and r["pairs"] == 20 and r["fit"]["disjoint_from_eval"]
    for row in r["conditions"].values():
        assert row["success"]["n"] == 20 and 0 <= row["success"]["rate"] <= 1
    assert {"discovered_vs_random", "discovered_vs_baseline", "visible_coin_vs_baseline"} <= set(r["effects"])
    assert r["magnitude"] == 4.0 and 1 <= len(r["set"]) <= r["shape"][0] // 2
    assert r["stability"]["n_boot"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("--target", "3,4"), "CoinRun targets are the ood split's own coin positions"),
        (("--split", "train"), "runs on ood levels"),
        (("--layer", "embedder.fc"), "not spatial channels"),
        (("--channels", ""), "channel set is empty"),
    ],
)
def test_coinrun_retarget_bad_input_is_one_line(coinrun_registry, cli, args, message):
    code, out, err = cli("retarget", "tiny-coinrun", "--episodes", "5", *args)
    assert code == 2 and out == ""
    assert message in err and err.strip().count("\n") == 0, err
