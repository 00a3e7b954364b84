"""Tests for workbench.hooks: naming, caching, interventions, cleanup, and parity with TransformerLens."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.hooks import (
    ActivationCache,
    HookPoint,
    hook_names,
    hooks,
    name_hook_points,
    run_with_cache,
    run_with_hooks,
)


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(c, c, 3, padding=1)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.resadd_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.conv0(torch.relu(x))))
        return self.resadd_out(x + out)


class Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.res1 = ResBlock(4)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedder = nn.Module()
        self.embedder.block2 = Embedder()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 5 * 5, 6))
        self.fc_policy = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.embedder.block2
        return self.fc_policy(self.head(b.res1(b.conv(x))))


class Boom(Exception):
    pass


RESADD = "embedder.block2.res1.resadd_out"


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_hook_names_lists_nested_paths_in_named_modules_order(net: Net) -> None:
    names = hook_names(net)
    assert "" not in names
    for expected in (RESADD, "embedder.block2.conv", "embedder.block2.res1.conv0", "fc_policy", "head.1"):
        assert expected in names
    assert names == [n for n, _ in net.named_modules() if n]


def test_name_hook_points_sets_path(net: Net) -> None:
    assert net.embedder.block2.res1.resadd_out.name is None
    assert name_hook_points(net) is net
    assert net.embedder.block2.res1.resadd_out.name == RESADD


def test_cache_single_name_matches_manual_computation(net: Net, x: torch.Tensor) -> None:
    out, cache = run_with_cache(net, x, names_filter=RESADD)
    assert isinstance(cache, ActivationCache)
    assert list(cache.keys()) == [RESADD]
    assert len(cache) == 1 and RESADD in cache and "fc_policy" not in cache
    b = net.embedder.block2
    with torch.no_grad():
        h = b.conv(x)
        manual = h + b.res1.conv1(torch.relu(b.res1.conv0(torch.relu(h))))
    torch.testing.assert_close(cache[RESADD], manual)
    torch.testing.assert_close(out, net(x))
    assert not cache[RESADD].requires_grad
    assert no_hooks_left(net)


def test_cache_list_and_callable_filters(net: Net, x: torch.Tensor) -> None:
    _, cache = run_with_cache(net, x, names_filter=["fc_policy", "embedder.block2.conv"])
    assert set(cache) == {"fc_policy", "embedder.block2.conv"}
    # keys come in execution order, not request order
    assert list(cache) == ["embedder.block2.conv", "fc_policy"]
    torch.testing.assert_close(cache["fc_policy"], net(x).detach())

    _, cache = run_with_cache(net, x, names_filter=lambda n: n.endswith(("conv0", "conv1")))
    assert list(cache) == ["embedder.block2.res1.conv0", "embedder.block2.res1.conv1"]

    _, cache = run_with_cache(net, x, names_filter=lambda n: False)
    assert len(cache) == 0


def test_names_filter_is_required(net: Net, x: torch.Tensor) -> None:
    with pytest.raises(TypeError):
        run_with_cache(net, x)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        run_with_cache(net, x, names_filter=None)  # type: ignore[arg-type]


def test_detach_false_keeps_graph(net: Net, x: torch.Tensor) -> None:
    out, cache = run_with_cache(net, x, names_filter=RESADD, detach=False)
    (grad,) = torch.autograd.grad(out.sum(), cache[RESADD])
    assert grad.shape == cache[RESADD].shape and grad.abs().sum() > 0


def test_zero_ablation_changes_output_and_none_does_not(net: Net, x: torch.Tensor) -> None:
    plain = net(x)
    zeroed = run_with_hooks(net, x, fwd_hooks=[(RESADD, lambda t, hook: torch.zeros_like(t))])
    expected = net.fc_policy(net.head(torch.zeros(2, 4, 5, 5)))
    torch.testing.assert_close(zeroed, expected)
    assert not torch.allclose(zeroed, plain)

    seen = []
    kept = run_with_hooks(net, x, fwd_hooks=[(RESADD, lambda t, hook: seen.append(t.shape))])
    torch.testing.assert_close(kept, plain)
    assert seen == [torch.Size([2, 4, 5, 5])]
    assert no_hooks_left(net)


def test_hook_receives_its_name_and_fresh_ctx(net: Net, x: torch.Tensor) -> None:
    calls = []

    def record(t: torch.Tensor, hook) -> None:
        calls.append((hook.name, dict(hook.ctx)))
        hook.ctx["n"] = hook.ctx.get("n", 0) + 1

    run_with_hooks(net, x, fwd_hooks=[(RESADD, record), (lambda n: n == "fc_policy", record)])
    run_with_hooks(net, x, fwd_hooks=[(RESADD, record)])
    assert calls == [(RESADD, {}), ("fc_policy", {}), (RESADD, {})]


def test_hooks_removed_after_normal_run_and_after_forward_raises(net: Net, x: torch.Tensor) -> None:
    run_with_hooks(net, x, fwd_hooks=[(RESADD, lambda t, hook: t * 2)])
    run_with_cache(net, x, names_filter=RESADD, fwd_hooks=[("fc_policy", lambda t, hook: None)])
    assert no_hooks_left(net)

    def explode(t: torch.Tensor, hook) -> None:
        raise Boom(hook.name)

    with pytest.raises(Boom):
        run_with_hooks(net, x, fwd_hooks=[(RESADD, explode), ("fc_policy", lambda t, hook: None)])
    assert no_hooks_left(net)
    with pytest.raises(Boom):
        run_with_cache(net, x, names_filter=["fc_policy", RESADD], fwd_hooks=[("head.1", explode)])
    assert no_hooks_left(net)
    with pytest.raises(RuntimeError):  # the model itself fails (wrong input shape)
        run_with_cache(net, torch.randn(2, 3, 4, 4), names_filter=RESADD, fwd_hooks=[(RESADD, lambda t, hook: t)])
    assert no_hooks_left(net)
    # and the model still works unhooked
    torch.testing.assert_close(net(x), run_with_hooks(net, x))


def test_context_manager_removes_hooks_when_body_raises(net: Net, x: torch.Tensor) -> None:
    with hooks(net, [(RESADD, lambda t, hook: torch.zeros_like(t))]):
        assert net.embedder.block2.res1.resadd_out._forward_hooks
        inside = net(x)
    assert no_hooks_left(net)
    assert not torch.allclose(inside, net(x))
    with pytest.raises(Boom), hooks(net, [(RESADD, lambda t, hook: None)]):
        raise Boom()
    assert no_hooks_left(net)


def test_unknown_hook_name_suggests_closest_and_registers_nothing(net: Net, x: torch.Tensor) -> None:
    ran = []
    bad = "embedder.block2.res1.resadd_ot"
    with pytest.raises(
        WorkbenchError, match=r"unknown hook .*resadd_ot.*did you mean: .*embedder\.block2\.res1\.resadd_out"
    ):
        run_with_hooks(net, x, fwd_hooks=[("fc_policy", lambda t, hook: ran.append(1)), (bad, lambda t, hook: None)])
    assert ran == [] and no_hooks_left(net)
    with pytest.raises(WorkbenchError, match="resadd_out"):
        run_with_cache(net, x, names_filter=[RESADD, bad])
    with pytest.raises(WorkbenchError, match="fc_policy"):
        run_with_cache(net, x, names_filter=RESADD, fwd_hooks=[("fc_polcy", lambda t, hook: None)])
    with pytest.raises(WorkbenchError):
        run_with_cache(net, x, names_filter="")  # the root is not a hook
    assert no_hooks_left(net)


def test_cache_reflects_intervention_on_same_hook(net: Net, x: torch.Tensor) -> None:
    _, clean = run_with_cache(net, x, names_filter=RESADD)
    _, cache = run_with_cache(net, x, names_filter=RESADD, fwd_hooks=[(RESADD, lambda t, hook: t * 3)])
    torch.testing.assert_close(cache[RESADD], clean[RESADD] * 3)


def test_non_tensor_output_raises_naming_module(x: torch.Tensor) -> None:
    class Pair(nn.Module):
        def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return t, t

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            a, b = self.pair(t)
            return a + b

    m = M()
    with pytest.raises(WorkbenchError, match="'pair'.*tuple"):
        run_with_hooks(m, x, fwd_hooks=[("pair", lambda t, hook: None)])
    with pytest.raises(WorkbenchError, match="'pair'"):
        run_with_cache(m, x, names_filter="pair")
    assert no_hooks_left(m)


def test_hook_returning_non_tensor_raises(net: Net, x: torch.Tensor) -> None:
    with pytest.raises(WorkbenchError, match="returned tuple"):
        run_with_hooks(net, x, fwd_hooks=[(RESADD, lambda t, hook: (t, t))])
    assert no_hooks_left(net)


def test_in_place_modification_of_cached_value_is_detected(x: torch.Tensor) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten())
    with pytest.raises(WorkbenchError, match="in place"):
        run_with_cache(model, x, names_filter="0")
    _, cache = run_with_cache(model, x, names_filter="1")  # the in-place op's own output is final
    assert (cache["1"] >= 0).all()
    assert no_hooks_left(model)


def test_activation_cache_missing_key_and_repr(net: Net, x: torch.Tensor) -> None:
    _, cache = run_with_cache(net, x, names_filter=[RESADD, "fc_policy"])
    with pytest.raises(KeyError, match="did you mean: .*fc_policy"):
        cache["fc_polcy"]
    with pytest.raises(WorkbenchError):
        cache["fc_polcy"]
    assert cache.get("nope") is None
    text = repr(cache)
    assert RESADD in text and "(2, 4, 5, 5)" in text and "(2, 3)" in text
    moved = cache.to("cpu")
    assert isinstance(moved, ActivationCache) and list(moved) == list(cache)
    assert repr(ActivationCache()) == "ActivationCache(empty)"


def test_bad_fwd_hooks_entries(net: Net, x: torch.Tensor) -> None:
    with pytest.raises(WorkbenchError, match="pairs"):
        run_with_hooks(net, x, fwd_hooks=[RESADD])  # type: ignore[list-item]
    with pytest.raises(WorkbenchError, match="not callable"):
        run_with_hooks(net, x, fwd_hooks=[(RESADD, 3)])  # type: ignore[list-item]
    with pytest.raises(WorkbenchError, match="callable"):
        run_with_hooks(net, x, fwd_hooks=[(3, lambda t, hook: None)])  # type: ignore[list-item]
    assert no_hooks_left(net)


# --- TransformerLens parity -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tl_model():
    tl = pytest.importorskip("transformer_lens")
    torch.manual_seed(0)
    cfg = tl.HookedTransformerConfig(
        n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32, d_vocab=20, n_ctx=8, act_fn="relu", seed=0
    )
    return tl.HookedTransformer(cfg).eval()


def test_transformer_lens_cache_parity(tl_model) -> None:
    tokens = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(2))
    name = "blocks.0.hook_resid_post"
    assert name in hook_names(tl_model)
    logits, cache = run_with_cache(tl_model, tokens, names_filter=name)
    tl_logits, tl_cache = tl_model.run_with_cache(tokens)
    assert list(cache) == [name]
    assert torch.allclose(cache[name], tl_cache[name])
    assert torch.allclose(logits, tl_logits)
    # caching every hook point works too (no in-place surprises inside HookedTransformer)
    _, everything = run_with_cache(tl_model, tokens, names_filter=lambda n: n.split(".")[-1].startswith("hook_"))
    assert set(everything) == set(tl_cache.keys())
    for key in tl_cache:
        assert torch.allclose(everything[key], tl_cache[key]), key
    assert no_hooks_left(tl_model)


def test_transformer_lens_hook_parity(tl_model) -> None:
    tokens = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(3))
    name = "blocks.0.hook_resid_post"

    def zero(t: torch.Tensor, hook) -> torch.Tensor:
        assert hook.name == name
        return torch.zeros_like(t)

    ours = run_with_hooks(tl_model, tokens, fwd_hooks=[(name, zero)])
    theirs = tl_model.run_with_hooks(tokens, fwd_hooks=[(name, zero)])
    assert torch.allclose(ours, theirs)
    assert not torch.allclose(ours, tl_model(tokens))
    # TL-style fn using hook.layer()
    layers = []
    run_with_hooks(tl_model, tokens, fwd_hooks=[(name, lambda t, hook: layers.append(hook.layer()))])
    assert layers == [0]
    assert no_hooks_left(tl_model)
