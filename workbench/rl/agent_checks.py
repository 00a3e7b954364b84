"""Agent artifact checks: config.json and weights validated against each other before anything is built.

Why here and not in `workbench.artifacts`: the checks know the RL env kinds and the policy config, so they live
with the agents (the core stays free of RL imports). Every failure is one WorkbenchError naming the file and key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.artifacts import CONFIG, WEIGHTS
from workbench.errors import WorkbenchError, closest, unknown
from workbench.rl.env_kinds import env_configs, env_kind, env_kind_names


def __getattr__(name: str) -> Any:
    """`ENV_CONFIGS` (native env kind -> config dataclass) and `ENV_KINDS` (their names), read from the env-kind
    registry (`workbench.rl.env_kinds`) when asked, so kinds registered later are included."""
    if name == "ENV_CONFIGS":
        return env_configs()
    if name == "ENV_KINDS":
        return tuple(env_kind_names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _env_shape(kind: str, env_config: Any) -> dict[str, int]:
    """The policy input/output shape a native env kind implies (what `workbench.rl.train` builds for it)."""
    return env_kind(kind).policy_shape(env_config)


def _check_table(cls: type, table: Mapping, where: str) -> Any:
    """Build dataclass `cls` from `table` with recipe-style checks: unknown keys (nearest named), types, values."""
    from workbench.recipes import from_table

    return from_table(cls, dict(table), where)


def _registered_kinds() -> list[str]:
    try:
        from workbench.subjects import kinds

        return [k for k in kinds() if k != "lm"]
    except Exception:  # the registry is optional here: fall back on the env kinds with a config class
        return env_kind_names()


def check_agent_config(cfg: Any, folder: str | Path) -> tuple[Any, Any]:
    """Check an agent artifact's config.json before building anything from it; returns (env config or None,
    PolicyConfig or the factory spec dict).

    One-line WorkbenchError, naming `FOLDER/config.json` and the `[section].key`, for: a config that is not an
    object, a missing or malformed `env` or `policy`, an unknown env kind or split, unknown keys (nearest named),
    wrong types or out-of-range values, a policy whose input/output shape does not fit its env, and a policy
    factory that is not `"module:callable"`. Env kinds without a config class here (procgen) get the kind check."""
    from workbench.rl.envs.maze import SPLITS
    from workbench.rl.policies import PolicyConfig

    where = f"{Path(folder) / CONFIG}"
    if not isinstance(cfg, Mapping):
        raise WorkbenchError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    env = cfg.get("env")
    if env is None:
        raise WorkbenchError(f"{where}: missing 'env' (the env the agent plays: kind, split and its config keys)")
    if not isinstance(env, Mapping):
        raise WorkbenchError(f"{where}: 'env' must be an object, got {type(env).__name__}")
    kind = env.get("kind")
    configs = env_configs()
    valid_kinds = list(dict.fromkeys([*configs, *_registered_kinds()]))
    if kind not in valid_kinds:
        if kind is None:
            raise WorkbenchError(f"{where}: [env] missing 'kind'; valid: {', '.join(valid_kinds)}")
        raise WorkbenchError(f"{where}: [env].kind: {unknown('env kind', str(kind), valid_kinds)}")
    split = env.get("split")
    splits = env_kind(kind).splits if kind in configs else SPLITS
    if split is not None and split not in splits:
        raise WorkbenchError(f"{where}: [env].split: {unknown('split', str(split), splits)}")
    if split is None and kind in configs:
        raise WorkbenchError(f"{where}: [env] missing 'split'; valid: {', '.join(splits)}")
    env_config = None
    if kind in configs:
        env_table = {k: v for k, v in env.items() if k not in ("kind", "split")}
        env_config = _check_table(configs[kind], env_table, f"{where} [env]")
    policy = cfg.get("policy")
    if policy is None:
        raise WorkbenchError(
            f"{where}: missing 'policy' (the network shape: in_channels, obs_size, channels, pool, hidden, n_actions)"
        )
    if not isinstance(policy, Mapping):
        raise WorkbenchError(f"{where}: 'policy' must be an object, got {type(policy).__name__}")
    if "factory" in policy:  # a user's own network, rebuilt by an importable callable
        factory = policy["factory"]
        if not isinstance(factory, str) or ":" not in factory or factory.startswith(":") or factory.endswith(":"):
            raise WorkbenchError(f"{where}: [policy].factory must be 'module:callable', got {factory!r}")
        if not isinstance(policy.get("kwargs", {}), Mapping):
            raise WorkbenchError(f"{where}: [policy].kwargs must be an object of keyword arguments")
        extra = sorted(set(policy) - {"factory", "kwargs"})
        if extra:
            raise WorkbenchError(f"{where}: [policy]: unknown key {extra[0]!r} next to 'factory' (valid: kwargs)")
        return env_config, dict(policy)
    policy_config = _check_table(PolicyConfig, policy, f"{where} [policy]")
    check_policy_config(policy_config, f"{where} [policy]")
    if env_config is not None:
        for key, want in _env_shape(kind, env_config).items():
            have = getattr(policy_config, key)
            if have != want:
                raise WorkbenchError(
                    f"{where}: [policy].{key} = {have} does not fit the {kind} env, which needs {want}"
                )
    return env_config, policy_config


def check_state_dict(policy: Any, state: Mapping[str, Any], folder: str | Path) -> None:
    """Check loaded weights against the policy built from the config, before `load_state_dict`.

    One-line WorkbenchError naming `FOLDER/weights.safetensors` for: missing or unexpected tensors (weights of
    another architecture), a tensor of another shape (named, with both shapes and the config's layer widths), a
    non-floating dtype, and NaN or infinite values."""
    import torch

    where = f"{Path(folder) / WEIGHTS}"
    expected = policy.state_dict()
    cfg = getattr(policy, "cfg", None)
    shape_note = ""
    if cfg is not None and hasattr(cfg, "channels"):
        shape_note = (
            f"; {CONFIG} [policy] says channels={list(cfg.channels)}, hidden={cfg.hidden}, "
            f"obs_size={cfg.obs_size}, n_actions={cfg.n_actions}"
        )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]

    def listing(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {listing(missing)}")
        if unexpected:
            near = closest(unexpected[0], expected) if not missing else []
            parts.append(f"unexpected {listing(unexpected)}" + (f" (did you mean {near[0]}?)" if near else ""))
        raise WorkbenchError(f"{where}: weights of another architecture: {'; '.join(parts)}{shape_note}")
    for key, want in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            raise WorkbenchError(
                f"{where}: weights of another architecture: {key} is {tuple(got.shape)} in the file but "
                f"{tuple(want.shape)} for the config{shape_note}"
            )
        if not torch.is_floating_point(got):
            raise WorkbenchError(f"{where}: {key} has dtype {got.dtype}; expected floating-point weights")
        if not torch.isfinite(got).all():
            raise WorkbenchError(f"{where}: {key} contains NaN or infinite values; the weights are corrupt")


def check_policy_config(cfg: Any, where: str) -> None:
    """The numbers of a `[policy]` table (PolicyConfig checks only the lengths): one line naming `where` and key."""
    from workbench.validate import check_float, check_int

    try:
        check_int("in_channels", cfg.in_channels, 1, 64)
        check_int("obs_size", cfg.obs_size, 1, 512)
        if not 1 <= len(cfg.channels) <= 8:
            raise WorkbenchError(f"channels must list 1..8 block widths, got {len(cfg.channels)}")
        for i, c in enumerate(cfg.channels):
            check_int(f"channels[{i}]", c, 1, 1024)
        check_int("hidden", cfg.hidden, 1, 16_384)
        check_int("n_actions", cfg.n_actions, 1, 64)
        check_float("input_scale", cfg.input_scale, 0.0, 1e6, lo_open=True)
    except WorkbenchError as err:
        raise WorkbenchError(f"{where}: {err}") from None
