"""TransformerLens-style hooks and activation caching on any `torch.nn.Module`, without rewriting the model.

Why this shape: interpretability code written for TransformerLens (`fn(tensor, hook)`, `fwd_hooks=[(name, fn)]`,
`run_with_cache`) should work unchanged on our own RL nets, and on HookedTransformer itself. Instead of wrapping or
tracing the model we name hook points by their `named_modules()` path and attach plain `register_forward_hook`
callbacks for the duration of one call, so a model with no hooks runs exactly as before and costs nothing extra.

Rules that keep it predictable:
- every exact name is validated before anything is registered, so a typo never leaves half the hooks attached;
- handles are removed in a `finally`, so a forward that raises leaves the model clean;
- the cache only holds what `names_filter` asks for (caching everything is a memory trap on big inputs);
- the cache sees the output *after* the user's own hooks on the same name, i.e. what the rest of the model saw.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from workbench.errors import WorkbenchError, closest, unknown

__all__ = [
    "ActivationCache",
    "Hook",
    "HookFn",
    "HookPoint",
    "MissingActivation",
    "NamesFilter",
    "hook_names",
    "hooks",
    "name_hook_points",
    "run_with_cache",
    "run_with_hooks",
]

HookFn = Callable[..., Tensor | None]
"""`fn(tensor, hook=hook) -> tensor | None`: return a tensor to replace the module output, None to keep it."""
NameOrFilter = str | Callable[[str], bool]
NamesFilter = str | Sequence[str] | Callable[[str], bool]

_LAYER_RE = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


class HookPoint(nn.Module):
    """Identity module marking a value that has no module of its own (e.g. a residual sum).

    Why: forward hooks only see module outputs, so `return self.resadd_out(x + out)` makes the sum hookable.
    `name` is informational (set by `name_hook_points`); hooking goes by module path, never by this attribute.
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}" if self.name else ""


class Hook:
    """The `hook` argument handed to hook functions: `.name` (hook path), `.ctx` (scratch dict), `.module`.

    Why not pass the module: TransformerLens hook fns read `hook.name` / `hook.ctx` / `hook.layer()`, and a fresh
    object per call gives `ctx` per-call lifetime, so state never leaks between runs.
    """

    __slots__ = ("ctx", "module", "name")

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self.ctx: dict[str, Any] = {}

    def layer(self) -> int:
        """First integer path component (0 in `blocks.0.hook_resid_post`), as TransformerLens's `hook.layer()`."""
        m = _LAYER_RE.search(self.name)
        if m is None:
            raise WorkbenchError(f"hook {self.name!r} has no layer index in its name")
        return int(m.group(1))

    def __repr__(self) -> str:
        return f"Hook({self.name!r})"


def hook_names(model: nn.Module) -> list[str]:
    """Every hookable name: each submodule path of `model.named_modules()` except the root, in that order."""
    return [name for name, _ in model.named_modules() if name]


def name_hook_points(model: nn.Module) -> nn.Module:
    """Set `.name` on every `HookPoint` to its module path (for readable reprs); returns `model`."""
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = name
    return model


def _module(model: nn.Module, name: str) -> nn.Module:
    """Resolve one exact hook name. `get_submodule` walks only the path (cheap per call); the full name list is
    built only to word the error."""
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            pass
    raise unknown("hook", name, hook_names(model))


def _resolve(model: nn.Module, target: object) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs selected by an exact name or a `name -> bool` filter; raises on unknown exact names."""
    if isinstance(target, str):
        return [(target, _module(model, target))]
    if callable(target):
        return [(n, m) for n, m in model.named_modules() if n and target(n)]
    raise WorkbenchError(f"hook target must be a name (str) or a callable name -> bool, got {type(target).__name__}")


def _not_tensor(name: str, output: object) -> WorkbenchError:
    return WorkbenchError(
        f"hook {name!r}: module output is {type(output).__name__}, not a tensor; "
        "hook a submodule (or a HookPoint) whose output is a single tensor"
    )


def _user_hook(fn: HookFn, hook: Hook) -> Callable[[nn.Module, Any, Any], Tensor | None]:
    def forward_hook(module: nn.Module, args: Any, output: Any) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise _not_tensor(hook.name, output)
        result = fn(output, hook=hook)  # keyword, like TransformerLens, so partial(fn, pos=...) idioms work
        if result is not None and not isinstance(result, Tensor):
            raise WorkbenchError(
                f"hook fn on {hook.name!r} returned {type(result).__name__}; return a tensor to replace the output "
                "or None to keep it"
            )
        return result

    return forward_hook


def _validated(
    model: nn.Module, fwd_hooks: Iterable[tuple[NameOrFilter, HookFn]]
) -> list[tuple[str, nn.Module, HookFn]]:
    """Resolve all `(name_or_filter, fn)` pairs before registering any, so bad input leaves the model untouched."""
    plan: list[tuple[str, nn.Module, HookFn]] = []
    for entry in fwd_hooks:
        try:
            target, fn = entry
        except (TypeError, ValueError):
            raise WorkbenchError(f"fwd_hooks entries must be (name_or_filter, fn) pairs, got {entry!r}") from None
        if not callable(fn):
            raise WorkbenchError(f"hook fn for {target!r} is not callable: {fn!r}")
        plan.extend((name, module, fn) for name, module in _resolve(model, target))
    return plan


@contextmanager
def hooks(model: nn.Module, fwd_hooks: Iterable[tuple[NameOrFilter, HookFn]]) -> Iterator[nn.Module]:
    """Attach `fwd_hooks` to `model` for the body of the `with`; always detaches them, even if the body raises.

    Each pair is `(exact_name | name -> bool, fn)`; fn is called as `fn(output, hook=Hook)` and may return a
    replacement tensor. Exact names are checked up front (WorkbenchError suggesting the closest valid name).
    """
    plan = _validated(model, fwd_hooks)
    handles: list[RemovableHandle] = []
    try:
        for name, module, fn in plan:
            handles.append(module.register_forward_hook(_user_hook(fn, Hook(name, module))))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def run_with_hooks(
    model: nn.Module, *args: Any, fwd_hooks: Iterable[tuple[NameOrFilter, HookFn]] = (), **kwargs: Any
) -> Any:
    """`model(*args, **kwargs)` with `fwd_hooks` attached for this call only (removed even if forward raises)."""
    with hooks(model, fwd_hooks):
        return model(*args, **kwargs)


class MissingActivation(WorkbenchError, KeyError):
    """KeyError for a name that is not in an ActivationCache; also a WorkbenchError so the CLI prints one line."""

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0]) if self.args else ""


class ActivationCache(Mapping[str, Tensor]):
    """Read-only mapping hook name -> cached activation, in the order the modules ran.

    Why a Mapping and not a dict: a typo should say which names *are* cached instead of a bare KeyError.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Tensor] | None = None) -> None:
        self._data: dict[str, Tensor] = dict(data or {})

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._data[name]
        except KeyError:
            pass
        hits = closest(name, self._data) if isinstance(name, str) else []
        if hits:
            raise MissingActivation(f"{name!r} is not cached; did you mean: {', '.join(hits)}?")
        cached = ", ".join(list(self._data)[:8]) + (" ..." if len(self._data) > 8 else "")
        raise MissingActivation(f"{name!r} is not cached; cached: {cached or '(nothing)'} -- add it to names_filter")

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to(self, device: torch.device | str) -> ActivationCache:
        """A new cache with every tensor moved to `device`."""
        return ActivationCache({name: t.to(device) for name, t in self._data.items()})

    def __repr__(self) -> str:
        if not self._data:
            return "ActivationCache(empty)"
        width = max(len(name) for name in self._data)
        rows = [
            f"  {name:<{width}}  {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for name, t in self.items()
        ]
        return f"ActivationCache({len(self._data)} names:\n" + "\n".join(rows) + "\n)"


def _cache_targets(model: nn.Module, names_filter: NamesFilter) -> list[tuple[str, nn.Module]]:
    if isinstance(names_filter, str):
        return [(names_filter, _module(model, names_filter))]
    if isinstance(names_filter, (list, tuple)):
        return [(name, _module(model, name)) for name in names_filter]
    if callable(names_filter):
        return _resolve(model, names_filter)
    raise TypeError(
        f"names_filter must be a hook name, a list/tuple of names, or a callable name -> bool, "
        f"got {type(names_filter).__name__}"
    )


def _version(t: Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors have no version counter
        return None


def run_with_cache(
    model: nn.Module,
    *args: Any,
    names_filter: NamesFilter,
    fwd_hooks: Iterable[tuple[NameOrFilter, HookFn]] = (),
    detach: bool = True,
    **kwargs: Any,
) -> tuple[Any, ActivationCache]:
    """Run `model(*args, **kwargs)` and return `(output, cache)` holding only the activations `names_filter` names.

    `names_filter` is required: a name, a list/tuple of names, or `name -> bool`. User `fwd_hooks` run first, so
    the cache holds what downstream modules actually received. `detach=False` keeps the graph (for gradients with
    respect to activations). Raises WorkbenchError if the model later modifies a cached tensor in place (e.g.
    `ReLU(inplace=True)`), because the cached value would then silently be wrong.
    """
    targets = _cache_targets(model, names_filter)
    plan = _validated(model, fwd_hooks)
    store: dict[str, Tensor] = {}
    versions: dict[str, int | None] = {}

    def cacher(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def forward_hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise _not_tensor(name, output)
            store[name] = output.detach() if detach else output
            versions[name] = _version(output)

        return forward_hook

    handles: list[RemovableHandle] = []
    try:
        for name, module, fn in plan:  # user hooks first: forward hooks run in registration order
            handles.append(module.register_forward_hook(_user_hook(fn, Hook(name, module))))
        for name, module in targets:
            handles.append(module.register_forward_hook(cacher(name)))
        output = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    for name, t in store.items():
        if versions[name] is not None and _version(t) != versions[name]:
            raise WorkbenchError(
                f"cached activation {name!r} was modified in place later in the forward pass (e.g. an in-place "
                "op such as ReLU(inplace=True)); make that op out-of-place or cache a different hook"
            )
    return output, ActivationCache(store)
