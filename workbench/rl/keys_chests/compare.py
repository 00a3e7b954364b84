"""The organism against its twin on the same levels: excess keys and chests opened, with paired-bootstrap intervals.

Why paired: both agents play the very same rooms (same level seeds, same action-sampling seed), so the difference
per room removes the rooms' own variance; `workbench.metrics.paired_diff_ci` resamples rooms.

    python -m workbench.rl.keys_chests.compare keys-chests keys-chests-mixed --split ood --episodes 1000 --seed 20231001
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.errors import WorkbenchError
from workbench.metrics import paired_diff_ci

COMPARED = ("excess_keys", "chests_opened", "keys_collected", "excess_key", "opened_all_possible")


def compare_agents(a, b, *, split: str = "ood", episodes: int = 1000, seed: int = 0) -> dict:
    """Each agent's rates and means on `episodes` levels of `split` (seed), and b - a per level for COMPARED."""
    from workbench.rl.world import check_split

    if a.world.config != b.world.config:
        raise WorkbenchError(f"{a.name} and {b.name} play differently configured rooms; they cannot be paired")
    check_split(a.world, split)
    levels = a.world.levels(split, episodes, seed)
    recs = {x.name: x.world.run(x.policy, levels, seed=seed) for x in (a, b)}
    series = {name: {**r.flags(), **r.values()} for name, r in recs.items()}
    diff = {
        k: {
            key: v
            for key, v in paired_diff_ci(
                series[a.name][k].astype(float), series[b.name][k].astype(float), seed=seed
            ).items()
            if key in ("diff", "ci95", "n")
        }
        for k in COMPARED
    }
    return {
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "agents": {name: r.rates() for name, r in recs.items()},
        "difference": {"of": f"{b.name} - {a.name}", **diff},
    }


def text(result: dict) -> str:
    lines = [f"{result['episodes']} {result['split']} levels, seed {result['seed']}"]
    for name, r in result["agents"].items():
        ex, ch = r["means"]["excess_keys"], r["means"]["chests_opened"]
        lines.append(
            f"{name}: excess keys {ex['mean']:.3f} [{ex['ci95'][0]:.3f}, {ex['ci95'][1]:.3f}], chests opened "
            f"{ch['mean']:.3f} [{ch['ci95'][0]:.3f}, {ch['ci95'][1]:.3f}], excess_key rate "
            f"{r['rates']['excess_key']:.3f} [{r['ci95']['excess_key'][0]:.3f}, {r['ci95']['excess_key'][1]:.3f}], "
            f"opened_all_possible {r['rates']['opened_all_possible']:.3f} "
            f"[{r['ci95']['opened_all_possible'][0]:.3f}, {r['ci95']['opened_all_possible'][1]:.3f}]"
        )
    d = result["difference"]
    lines.append(
        f"{d['of']} (paired bootstrap): "
        + "; ".join(f"{k} {d[k]['diff']:+.3f} [{d[k]['ci95'][0]:+.3f}, {d[k]['ci95'][1]:+.3f}]" for k in COMPARED)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from workbench import load_subject

    p = argparse.ArgumentParser(prog="python -m workbench.rl.keys_chests.compare", description=__doc__.split("\n")[0])
    p.add_argument("a", help="the organism (e.g. keys-chests)")
    p.add_argument("b", help="its twin (e.g. keys-chests-mixed)")
    p.add_argument("--split", default="ood")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=20231001)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.episodes < 1:
            raise WorkbenchError(f"--episodes must be >= 1, got {args.episodes}")
        result = compare_agents(
            load_subject(args.a), load_subject(args.b), split=args.split, episodes=args.episodes, seed=args.seed
        )
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else text(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
