"""Subjects and the one registry between generic verbs and the models they study.

Why: every verb (eval, hooks, steer, probe, vector-field, collect, sae, battery, the app) needs the same two things --
a model with hook points and what experiments need from its world (levels per split, observations, goal-outcome
records, ground-truth labels, contrast pairs for goal vectors). A *kind* packages that once, in the subject's own
folder (`workbench/rl/maze/kind.py`, `workbench/rl/coinrun/kind.py`, `workbench/rl/procgen/kind.py`,
`workbench/lm/kind.py`); generic code reaches a subject only through this module, never through `if kind == ...`.

A subject reference is one of:
- a shipped name (`maze-cheese-corner`) or an artifact folder (its `config.json` names the kind);
- a published-format checkpoint with an env kind: `model.pth` + `env="procgen-maze"` (or `procgen-coinrun`);
- a subject registered from Python: `workbench.register_subject("my-agent", factory)`;
- an entry point `package.module:factory` (the CLI's way to reach a user's own policy class and env).

A kind is `SubjectKind(name, load, verbs, ...)`: `load(ref) -> subject`, and `verbs` maps a verb name to the
function implementing it for that kind. Asking a kind for a verb it lacks is one line naming the verbs it has.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError, unknown

if TYPE_CHECKING:
    from workbench.sae.views import FeatureViews

VERBS = ("eval", "hooks", "steer", "probe", "vector-field", "collect", "sae")
"""The verbs a kind may implement (every kind implements `eval`/`hooks` or says why not)."""


@dataclass(frozen=True)
class BatteryAdapter:
    """How battery checks (`workbench.battery`, `probes/*.toml`) measure a subject of one kind, so a kind brings its
    batteries with it and battery.py stays generic: it parses, validates through the adapter, runs through it, stores
    rows and reports. The built-in families keep theirs in their own packages (`workbench/rl/maze/battery.py`,
    `workbench/rl/coinrun/battery.py`, `workbench/lm/battery.py`, `workbench/rl/keys_chests/battery.py`).

    Attributes:
        measure: check kind (`behaviour`, `probe`, `intervention`, `retarget`, ...) -> `fn(check, subject)` returning
            `{metric: {"value", "ci_low", "ci_high", "n"}}` (`workbench.battery.measurement` builds one entry). The
            keys are the check kinds this kind's subjects take; a subject with a world also takes `behaviour` checks
            without a `behaviour` entry, measured from the world's rollout rates (`world.run(...).rates()`, metrics:
            `world.rate_keys`).
        metrics: check kind, or `probe/METHOD` for probe checks, -> the metric names `measure` returns; every
            expectation is validated against them before anything runs.
        choices: `hook`, `split`, `target`, `vector` or `method` -> the values a check may name, or `fn(subject)`
            returning that mapping when the values depend on the loaded subject (an LM's layers and probe targets).
            Without `hook`, hooks are the policy's hook names (`workbench.hooks.hook_names(subject.policy)`); without
            `split`, splits are the world's (`subject.world.splits`).
        validate: `fn(check, subject, where)` for rules the fields above cannot state (an LM probe's prompt position
            and fit/test split and seeds); raises a one-line `WorkbenchError` starting with `where`. Runs after the
            kind, hook and choices are checked and before the metric names are.
    """

    measure: Mapping[str, Callable[[Any, Any], dict]]
    metrics: Mapping[str, tuple[str, ...]]
    choices: Mapping[str, tuple[str, ...]] | Callable[[Any], Mapping[str, tuple[str, ...]]] = field(
        default_factory=dict
    )
    validate: Callable[[Any, Any, str], None] | None = None

    def choices_for(self, subject: Any) -> Mapping[str, tuple[str, ...]]:
        """`choices` for this subject (calls it when it is a function of the subject)."""
        return self.choices(subject) if callable(self.choices) else self.choices


@dataclass(frozen=True)
class SubjectKind:
    """One kind of subject: how to load it and which function implements each verb for it.

    Attributes:
        name: the registry key, also the CLI's `--env` value for file references (`procgen-maze`).
        summary: one line for `workbench kinds` and error messages.
        load: `load(ref) -> subject` for a path/name reference of this kind.
        verbs: verb name -> callable `fn(subject, **options)`; absent verbs are unsupported for this kind.
        file_suffixes: file endings `load` accepts directly (e.g. `.pth`); empty for folder-based kinds.
        battery: how `workbench battery` checks validate and measure this kind (`BatteryAdapter`); None: behaviour
            checks only, from the world's rollout rates (RL kinds), and no checks at all for a kind without a world.
        features: how SAE latents are sampled, shown and steered on this kind's subjects (`FeatureViews`: the
            Features page and `workbench.sae.views.views_for`); None: the generic RL views for a kind with a world
            (rollout states, the dataset's labels, decoder-direction steering on the world's goal rates).
    """

    name: str
    summary: str
    load: Callable[[str], Any]
    verbs: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    file_suffixes: tuple[str, ...] = ()
    battery: BatteryAdapter | None = None
    features: FeatureViews | None = None

    def verb(self, name: str) -> Callable[..., Any]:
        """The function implementing `name` for this kind; a verb it lacks is one line naming those it has."""
        fn = self.verbs.get(name)
        if fn is None:
            have = ", ".join(sorted(v for v in self.verbs if v != "world")) or "none"
            raise WorkbenchError(f"`{name}` is not available for {self.name} subjects (available: {have})")
        return fn


# Built-in kinds, imported lazily so `import workbench` stays light: name -> "module:attribute".
_BUILTIN: dict[str, str] = {
    "maze": "workbench.rl.maze.kind:KIND",
    "coinrun": "workbench.rl.coinrun.kind:KIND",
    "keys-chests": "workbench.rl.keys_chests.kind:KIND",
    "colour-shape": "workbench.rl.colour_shape.kind:KIND",
    "procgen-maze": "workbench.rl.procgen.kind:MAZE",
    "procgen-coinrun": "workbench.rl.procgen.kind:COINRUN",
    "lm": "workbench.lm.kind:KIND",
}
_KINDS: dict[str, SubjectKind] = {}
_SUBJECTS: dict[str, Callable[[], Any]] = {}


def register_kind(kind: SubjectKind) -> SubjectKind:
    """Add (or replace) a kind: a new subject type is a folder plus this one call."""
    if not isinstance(kind, SubjectKind):
        raise WorkbenchError(f"register_kind takes a SubjectKind, got {type(kind).__name__}")
    _KINDS[kind.name] = kind
    return kind


def kinds() -> list[str]:
    """Every registered kind name."""
    return sorted({*_BUILTIN, *_KINDS})


def get_kind(name: str) -> SubjectKind:
    """The kind registered under `name` (built-ins load on first use); unknown -> the nearest names."""
    if name not in _KINDS:
        if name not in _BUILTIN:
            raise unknown("subject kind", name, kinds())
        _KINDS[name] = _import(_BUILTIN[name], what=f"subject kind {name!r}")
    return _KINDS[name]


def register_subject(name: str, factory: Callable[[], Any]) -> None:
    """Make `name` a subject reference for every verb in this process: `factory()` returns the subject, e.g.
    `workbench.make_agent(policy, env="maze")`. Registered names win over shipped artifacts of the same name."""
    if not callable(factory):
        raise WorkbenchError(f"register_subject({name!r}, ...) needs a callable factory, got {type(factory).__name__}")
    _SUBJECTS[str(name)] = factory


def registered_subjects() -> list[str]:
    return sorted(_SUBJECTS)


def kind_of(subject: Any) -> SubjectKind:
    """The kind a loaded subject belongs to (its `kind` attribute)."""
    name = getattr(subject, "kind", None)
    if not isinstance(name, str):
        raise WorkbenchError(
            f"{type(subject).__name__} is not a workbench subject (no `kind`); build one with workbench.make_agent"
        )
    return get_kind(name)


def _import(spec: str, what: str) -> Any:
    module, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise WorkbenchError(f"{what}: cannot import module {module!r} ({err})") from None
    if not hasattr(mod, attr):
        raise unknown(f"attribute of {module}", attr, [a for a in dir(mod) if not a.startswith("_")])
    return getattr(mod, attr)


def _is_entry_point(ref: str) -> bool:
    module, sep, attr = ref.partition(":")
    return bool(sep) and module.replace(".", "").replace("_", "").isalnum() and attr.isidentifier()


def _checked(subject: Any, ref: str) -> Any:
    kind_of(subject)  # a factory must return something with a registered kind
    return subject


def load_subject(ref: str | Path, env: str | None = None) -> Any:
    """Load any subject reference (see the module docstring). `env` names the kind of a bare file (`procgen-maze`
    for a published `.pth`); with a folder or name it must agree with the artifact's own kind."""
    ref_s = str(ref)
    if env is not None and env not in kinds():
        raise unknown("env", env, kinds())
    if ref_s in _SUBJECTS:
        return _checked(_SUBJECTS[ref_s](), ref_s)
    path = Path(ref_s)
    if path.is_file():
        if env is None:
            file_kinds = [k for k in kinds() if get_kind(k).file_suffixes]
            raise WorkbenchError(
                f"{ref_s!r} is a file: say which env it runs in with --env ({', '.join(file_kinds)}); "
                "artifact folders and shipped names need no --env"
            )
        kind = get_kind(env)
        if not kind.file_suffixes:
            raise WorkbenchError(f"--env {env} takes an artifact folder or a shipped name, not the file {ref_s!r}")
        return kind.load(ref_s)
    if not path.exists() and _is_entry_point(ref_s):
        factory = _import(ref_s, what=f"subject factory {ref_s!r}")
        if not callable(factory):
            raise WorkbenchError(f"subject factory {ref_s!r} is not callable")
        return _checked(factory(), ref_s)
    found = _artifact_kind(ref_s)
    if found is None:
        from workbench import artifacts

        names = artifacts.available("agents") + artifacts.available("lms") + registered_subjects()
        if path.suffix in (".pth", ".pt") or env in ("procgen-maze", "procgen-coinrun"):
            raise WorkbenchError(f"checkpoint {ref_s!r} does not exist")
        raise unknown("artifact", ref_s, names)
    kind_name, folder = found
    if env is not None and env != kind_name:
        raise WorkbenchError(f"{ref_s!r} is a {kind_name} subject (its config.json says so), not {env}; drop --env")
    return get_kind(kind_name).load(str(folder))


def _artifact_kind(ref: str) -> tuple[str, Path] | None:
    """(kind, folder) for a shipped name or an artifact folder, from its config.json; None when it is neither.

    A hidden `.NAME.xxxx` folder (left by an interrupted artifact write) is never an artifact: the artifacts
    module's one-line reason is raised as is, not turned into "unknown artifact"."""
    from workbench import artifacts

    name = Path(ref).name
    if name.startswith(".") and name not in (".", ".."):
        artifacts.resolve(ref, "agents")  # raises the "hidden temporary folder" error
    for section in ("agents", "lms"):
        try:
            folder = artifacts.resolve(ref, section)
        except WorkbenchError:
            continue
        cfg = artifacts.read_config(folder)
        if section == "lms" or "env" not in cfg:
            return "lm", folder  # workbench LM artifacts and Hugging Face folders; the LM loader checks the rest
        env = cfg["env"] if isinstance(cfg["env"], dict) else {}
        kind = env.get("kind")
        if kind not in kinds():
            raise unknown(f"env kind in {folder / artifacts.CONFIG}", str(kind), kinds())
        return kind, folder
    return None


def verb(subject: Any, name: str) -> Callable[..., Any]:
    """The function implementing verb `name` for this subject's kind."""
    return kind_of(subject).verb(name)
