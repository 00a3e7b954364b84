"""Labelled activation datasets (compatibility module): the code now lives in three places.

- `workbench.data.dataset`: the on-disk format, `ActivationDataset`, `collect_arrays` and the shard writers;
- `workbench.rl.collect`: `collect_maze` / `collect_coinrun` (labels from the env's true state and outcomes);
- `workbench.data.prompts`: `collect_prompts` for language models.
Every name importable from here before the split still is. `workbench.collect(agent, hooks, ...)` picks the right
collector for any RL subject.
"""

from __future__ import annotations

from workbench.data.dataset import (  # noqa: F401
    DEFAULT_SHARD_SIZE,
    FORMAT,
    FORMAT_VERSION,
    LABELS,
    META,
    STORAGE_DTYPES,
    ActivationDataset,
    LabelsLike,
    ShardWriter,
    _as_frame,
    _check_hook_list,
    _check_hooks,
    _check_shard,
    _device,
    _MemoryWriter,
    _now,
    _open_writer,
    _read_shard,
    _row_index,
    _source,
    _Writer,
    collect_arrays,
    shard_name,
)
from workbench.data.prompts import (  # noqa: F401
    PROMPT_POSITIONS,
    _prompt_positions,
    _prompt_tokens,
    collect_prompts,
)
from workbench.rl.collect import (  # noqa: F401
    COINRUN_LABEL_COLUMNS,
    MAZE_LABEL_COLUMNS,
    STATES,
    _agent_source,
    _check_collect_args,
    _CoinRunLabeller,
    _collect_rollout,
    _collect_start,
    _MazeLabeller,
    collect_coinrun,
    collect_maze,
)
