"""Real procgen Maze and CoinRun (the C++ games the published agents were trained on), with our conventions.

Why: results on our fast native envs should be checked on the real thing, and the published goal-misgeneralization
checkpoints only make sense on procgen's 64x64 pixels. This wraps `procgen.ProcgenGym3Env` (procgen-mirror 0.10.7,
optional extra `procgen`, needs numpy<2) as a Gymnasium-style vector env like `workbench.rl.envs.maze.MazeVecEnv`:
`reset(seed=)` / `step(actions)` -> obs, reward, terminated, truncated, info, same-step autoreset, and the same
masked-info episode records, so `EpisodeTracker` and the rate tables work unchanged.

Distributions come from state editing (`workbench.rl.procgen_state`), applied whenever an episode starts:
- maze `train`: the cheese moved to a uniform free cell of the maze's top-right r x r block; `ood`: procgen's own
  level (cheese anywhere).
- coinrun `train`: procgen's own level (coin at the end); `ood`: the coin moved to a uniform standable cell between
  the start and the exit. Reaching the exit column then ends the episode (terminated, `exit_reached`), as in
  Langosco et al.'s fork.
An edited state must be drawn before the policy sees it. procgen 0.10.7's set_state re-renders that game's
observation (vecgame.cpp calls observe() after deserialising), so no step is needed to draw a state: set_state then
observe() gives, byte for byte, the frame procgen showed for that state (maze and CoinRun) and, for maze, the frame a
NOOP step would draw (tests/test_procgen_parity.py); only CoinRun's camera fields (center_x, x_off) move to the agent.
Today edited states are still copied into a small side env, stepped once with NOOP (cur_time pre-decremented, so the
clock is unchanged), and the frame and the post-step state are copied back; the main env's other episodes are not
disturbed either way.

Observations are (N, 3, 64, 64) uint8 (channels first, like our policies take them; scale 1/255 in the policy).
Actions are procgen's 15 (LEFT 0-2, DOWN 3, NOOP 4, UP 5, RIGHT 6-8, 9-14 special; NOOP for maze and movement).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from workbench.errors import WorkbenchError, unknown
from workbench.rl.envs.batched import masked_info
from workbench.rl.procgen_state import (
    CoinRunView,
    MazeView,
    ProcgenState,
    agent_xy,
    coinrun_with_coin,
    maze_with_cheese,
    parse,
)

GAMES = ("maze", "coinrun")
SPLITS = ("train", "ood")
MODES = ("easy", "hard")
N_ACTIONS = 15
NOOP = 4
FORCE_RESET = -1  # procgen's action that ends the episode and starts a new level
MAX_STATE = 1 << 20


def _procgen():
    try:
        import procgen
    except ImportError as e:  # pragma: no cover - depends on the install
        raise WorkbenchError(
            "procgen is not installed; make test installs it, or pip install -c constraints.txt -e '.[dev,procgen]'"
        ) from e
    return procgen


@dataclass(frozen=True)
class ProcgenConfig:
    """Which procgen game and distribution. `region` is r for maze `train` (cheese in the top-right r x r block);
    `distribution_mode` is procgen's (`hard`: mazes up to 25 x 25, as in the published maze agents)."""

    game: str = "maze"
    distribution_mode: str = "hard"
    region: int = 5
    num_threads: int = 1
    max_steps: int = 1000
    """Step limit of one evaluation episode (procgen's own timeouts end maze episodes at 500 steps)."""

    def __post_init__(self) -> None:
        if self.game not in GAMES:
            raise unknown("procgen game", self.game, GAMES)
        if self.distribution_mode not in MODES:
            raise unknown("procgen distribution_mode", self.distribution_mode, MODES)
        if self.region < 1:
            raise WorkbenchError(f"maze region must be >= 1, got {self.region}")


def _make(config: ProcgenConfig, num: int, seed: int):
    return _procgen().ProcgenGym3Env(
        num=num,
        env_name=config.game,
        distribution_mode=config.distribution_mode,
        rand_seed=int(seed) % (2**31 - 1),
        num_threads=config.num_threads,
    )


class _StateIO:
    """Per-env get_state / set_state (procgen's callmethod touches every env; we often need a few)."""

    def __init__(self, env) -> None:
        self.env = env
        self.buf = env._ffi.new(f"char[{MAX_STATE}]")

    def get(self, idx) -> list[bytes]:
        out = []
        for i in idx:
            n = self.env.call_c_func("get_state", int(i), self.buf, MAX_STATE)
            out.append(bytes(self.env._ffi.buffer(self.buf, n)))
        return out

    def set(self, idx, states: list[bytes]) -> None:
        for i, s in zip(idx, states, strict=True):
            self.env.call_c_func("set_state", int(i), s, len(s))


class _SideEnvs:
    """Small procgen envs (sizes 1, 2, 4, ...) used to step a few states out of band: render an edited state with a
    NOOP, or force a new level with action -1, without stepping the main env's other episodes."""

    def __init__(self, config: ProcgenConfig) -> None:
        self.config, self.envs = config, {}

    def step(self, states: list[bytes], action: int) -> tuple[np.ndarray, list[bytes], np.ndarray]:
        """Step each state once with `action`; returns (obs (k, 64, 64, 3), new states, level_complete flags)."""
        k = len(states)
        size = 1 << max(0, (k - 1).bit_length())
        if size not in self.envs:
            env = _make(self.config, size, seed=0)
            self.envs[size] = (env, _StateIO(env))
        env, io = self.envs[size]
        io.set(range(k), states)
        env.act(np.full(size, action, dtype=np.int32))
        _, obs, _ = env.observe()
        info = env.get_info()
        done = np.array([bool(info[i]["prev_level_complete"]) for i in range(k)])
        return obs["rgb"][:k].copy(), io.get(range(k)), done


def _rewind_clock(state: ProcgenState) -> ProcgenState:
    state.head["cur_time"] -= 1
    return state


class ProcgenVecEnv(gym.vector.VectorEnv):
    """N procgen games stepping together, with goal bookkeeping (Gymnasium vector API, same-step autoreset).

    Finished episodes are reported under Gymnasium's masked-info convention (`info[key][i]` valid where
    `info["_" + key][i]`). Maze keys (as MazeVecEnv): cheese_reached, cheese_step, corner_reached, corner_step,
    region_reached, region_step, length, level_seed, cheese_in_region. CoinRun keys (as the native CoinRun env):
    coin_collected, coin_step, exit_reached, exit_step, died, length, coin_at_exit, level_seed.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, split: str = "ood", config: ProcgenConfig = ProcgenConfig()) -> None:
        if split not in SPLITS:
            raise unknown("split", split, SPLITS)
        if num_envs < 1:
            raise WorkbenchError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs, self.split, self.config = num_envs, split, config
        self.single_observation_space = gym.spaces.Box(0, 255, shape=(3, 64, 64), dtype=np.uint8)
        self.single_action_space = gym.spaces.Discrete(N_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.spaces.MultiDiscrete(np.full(num_envs, N_ACTIONS))
        self._env = None
        self._side = _SideEnvs(config)
        self._rng = np.random.default_rng()
        n = num_envs
        self.t = np.zeros(n, dtype=np.int64)
        self.level_seed = np.zeros(n, dtype=np.int64)
        if config.game == "maze":
            self.walls: np.ndarray | None = None
            self.mouse = np.zeros((n, 2), dtype=np.int64)
            self.cheese = np.zeros((n, 2), dtype=np.int64)
            self.corner = np.zeros((n, 2), dtype=np.int64)
            self.cheese_in_region = np.zeros(n, dtype=bool)
            self.region_block = np.zeros((n, 4), dtype=np.int64)  # top, bottom (excl), left, right (excl)
            self.steps = {k: np.full(n, -1, dtype=np.int64) for k in ("cheese", "corner", "region")}
        else:
            self.exit_col = np.zeros(n, dtype=np.int64)
            self.coin_at_exit = np.zeros(n, dtype=bool)
            self.steps = {k: np.full(n, -1, dtype=np.int64) for k in ("coin", "exit")}

    # -- level edits -----------------------------------------------------------------------------------------------
    def _edit(self, state: ProcgenState) -> ProcgenState | None:
        """The edited start state for this split, or None when procgen's own level is the distribution."""
        seed = int(state.head["current_level_seed"]) & 0x7FFFFFFF
        rng = np.random.default_rng([seed, 0x5EED])  # a pure function of the level: same level, same edit
        if self.config.game == "maze" and self.split == "train":
            cells = MazeView(state).region_cells(self.config.region)
            cell = tuple(int(v) for v in cells[rng.integers(len(cells))])
            return maze_with_cheese(state, cell)
        if self.config.game == "coinrun" and self.split == "ood":
            view = CoinRunView(state)
            coin = view.coin()
            assert coin is not None
            cells = view.surface_cells(2, coin[1] - 1)
            if len(cells) == 0:
                return None
            cell = tuple(int(v) for v in cells[rng.integers(len(cells))])
            return coinrun_with_coin(state, cell)
        return None

    def _start(self, idx: np.ndarray, states: list[bytes], obs: np.ndarray) -> None:
        """Record the new episodes of envs `idx` (their start `states`), editing and re-rendering them if needed.
        `obs` (N, 64, 64, 3) is updated in place for edited envs."""
        parsed = [parse(s) for s in states]
        edits, where = [], []
        for j, (i, st) in enumerate(zip(idx, parsed, strict=True)):
            self._remember_level(int(i), st)
            new = self._edit(st)
            if new is not None:
                parsed[j] = new
                edits.append(_rewind_clock(new.copy()).to_bytes())
                where.append(j)
        if edits:
            frames, after, _ = self._side.step(edits, NOOP)
            self._io.set([idx[j] for j in where], after)
            for j, frame in zip(where, frames, strict=True):
                obs[idx[j]] = frame
        for i, st in zip(idx, parsed, strict=True):
            self._bookkeep_start(int(i), st)

    def _remember_level(self, i: int, st: ProcgenState) -> None:
        self.level_seed[i] = int(st.head["current_level_seed"])
        if self.config.game == "coinrun":
            coin = CoinRunView(st).coin()
            self.exit_col[i] = coin[1] if coin is not None else st.grid.shape[1]

    def _bookkeep_start(self, i: int, st: ProcgenState) -> None:
        self.t[i] = 0
        for steps in self.steps.values():
            steps[i] = -1
        if self.config.game == "maze":
            view = MazeView(st)
            if self.walls is None:
                w = view.world_size
                self.walls = np.ones((self.num_envs, w, w), dtype=bool)
            self.walls[i] = view.walls()
            self.mouse[i] = view.mouse()
            cheese = view.cheese()
            self.cheese[i] = cheese if cheese is not None else (-1, -1)
            self.corner[i] = view.corner()
            r = min(self.config.region, view.size)
            top, right = view.offset, view.offset + view.size
            self.region_block[i] = (top, top + r, right - r, right)
            self.cheese_in_region[i] = cheese is not None and view.in_region(cheese, self.config.region)
            self._mark_maze(np.array([i]))
        else:
            coin = CoinRunView(st).coin()
            self.coin_at_exit[i] = coin is not None and coin[1] == self.exit_col[i]

    def _mark_maze(self, idx: np.ndarray) -> None:
        m = self.mouse[idx]
        top, bottom, left, right = self.region_block[idx].T
        for key, hit in (
            ("corner", np.all(m == self.corner[idx], axis=1)),
            ("region", (m[:, 0] >= top) & (m[:, 0] < bottom) & (m[:, 1] >= left) & (m[:, 1] < right)),
            ("cheese", np.all(m == self.cheese[idx], axis=1)),
        ):
            first = idx[hit & (self.steps[key][idx] < 0)]
            self.steps[key][first] = self.t[first]

    # -- Gymnasium API ---------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start N new episodes. `seed` fixes every level this env will generate (procgen's rand_seed).
        `options={"states": [...]}` starts env i from the given state (`ProcgenState` or bytes; exactly N, used
        as they are, without this split's edit): how experiments replay the same levels under every condition."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._env = _make(self.config, self.num_envs, seed=int(self._rng.integers(0, 2**31 - 1)))
        self._io = _StateIO(self._env)
        if options and options.get("states") is not None:
            return self._reset_to(list(options["states"]))
        _, ob, _ = self._env.observe()
        obs = ob["rgb"].copy()
        idx = np.arange(self.num_envs)
        self._start(idx, self._io.get(idx), obs)
        return np.ascontiguousarray(obs.transpose(0, 3, 1, 2)), {"level_seed": self.level_seed.copy()}

    def _reset_to(self, states: list) -> tuple[np.ndarray, dict]:
        if len(states) != self.num_envs:
            raise WorkbenchError(f"reset got {len(states)} states for {self.num_envs} envs")
        parsed = [s.copy() if isinstance(s, ProcgenState) else parse(bytes(s)) for s in states]
        if any(p.game != self.config.game for p in parsed):
            raise WorkbenchError(f"reset states must be {self.config.game} states")
        frames, after, _ = self._side.step([_rewind_clock(p.copy()).to_bytes() for p in parsed], NOOP)
        idx = np.arange(self.num_envs)
        self._io.set(idx, after)
        for i, st in zip(idx, parsed, strict=True):
            self._remember_level(int(i), st)
            self._bookkeep_start(int(i), st)
        return np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), {"level_seed": self.level_seed.copy()}

    def start_states(self) -> list[ProcgenState]:
        """The current state of every env, parsed (after `reset`: each level's edited start state)."""
        if self._env is None:
            raise WorkbenchError("call reset() before start_states()")
        return [parse(b) for b in self._io.get(range(self.num_envs))]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._env is None:
            raise WorkbenchError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if actions.min() < 0 or actions.max() >= N_ACTIONS:
            raise WorkbenchError(f"procgen actions must be in 0..{N_ACTIONS - 1}")
        self._env.act(actions.astype(np.int32))
        rew, ob, first = self._env.observe()
        obs = ob["rgb"].copy()
        infos = self._env.get_info()
        complete = np.array([bool(d["prev_level_complete"]) for d in infos])
        done = first.astype(bool)
        self.t += 1
        if self.config.game == "maze":
            self._move_mice(actions)
            # a finished episode ended on the step that reached the cheese; record it before the reset
            self.mouse[done & complete] = self.cheese[done & complete]
            self._mark_maze(np.arange(self.num_envs))
            terminated = done & complete
        else:
            terminated, done = self._coinrun_step(done, complete, obs)
        truncated = done & ~terminated
        reward = np.asarray(rew, dtype=np.float32)
        info: dict = {}
        if done.any():
            info = masked_info(self._records(done, complete), done)
            fresh = np.flatnonzero(done)
            self._start(fresh, self._io.get(fresh), obs)
        return np.ascontiguousarray(obs.transpose(0, 3, 1, 2)), reward, terminated, truncated, info

    # -- per-game step bookkeeping ---------------------------------------------------------------------------------
    def _move_mice(self, actions: np.ndarray) -> None:
        """Maze moves are exact on the grid: action a < 9 moves dx = a // 3 - 1, else dy = a % 3 - 1 (horizontal
        wins), blocked by walls; specials (>= 9) do not move. Checked against procgen's state in the tests."""
        a = np.where(actions < 9, actions, NOOP)
        dx = a // 3 - 1
        dy = np.where(dx != 0, 0, a % 3 - 1)
        target = self.mouse + np.stack([-dy, dx], axis=1)
        assert self.walls is not None
        w = self.walls.shape[-1]
        inside = np.all((target >= 0) & (target < w), axis=1)
        tc = np.clip(target, 0, w - 1)
        ok = inside & ~self.walls[np.arange(self.num_envs), tc[:, 0], tc[:, 1]]
        self.mouse[ok] = target[ok]

    def _coinrun_step(self, done: np.ndarray, complete: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.num_envs
        coin = done & complete
        self.steps["coin"][coin] = self.t[coin]
        at_exit_coin = coin & self.coin_at_exit
        self.steps["exit"][at_exit_coin] = self.t[at_exit_coin]
        exit_now = np.zeros(n, dtype=bool)
        if self.split == "ood":
            alive = np.flatnonzero(~done & ~self.coin_at_exit)
            if alive.size:
                xs = np.array([agent_xy(s)[0] for s in self._io.get(alive)])
                hit = alive[xs + 0.5 > self.exit_col[alive]]  # the agent's body overlaps the exit column
                exit_now[hit] = True
                self.steps["exit"][hit] = self.t[hit]
        if exit_now.any():  # end those episodes now: a new level from each env's own level stream
            idx = np.flatnonzero(exit_now)
            frames, after, _ = self._side.step(self._io.get(idx), FORCE_RESET)
            self._io.set(idx, after)
            obs[idx] = frames
        terminated = coin | exit_now
        return terminated, done | exit_now

    def _records(self, done: np.ndarray, complete: np.ndarray) -> dict:
        if self.config.game == "maze":
            return {
                "cheese_reached": self.steps["cheese"] >= 0,
                "cheese_step": self.steps["cheese"].copy(),
                "corner_reached": self.steps["corner"] >= 0,
                "corner_step": self.steps["corner"].copy(),
                "region_reached": self.steps["region"] >= 0,
                "region_step": self.steps["region"].copy(),
                "length": self.t.copy(),
                "level_seed": self.level_seed.copy(),
                "cheese_in_region": self.cheese_in_region.copy(),
            }
        coin = self.steps["coin"] >= 0
        exit_ = self.steps["exit"] >= 0
        timeout_steps = 1000
        return {
            "coin_collected": coin,
            "coin_step": self.steps["coin"].copy(),
            "exit_reached": exit_,
            "exit_step": self.steps["exit"].copy(),
            "died": done & ~coin & ~exit_ & (self.t < timeout_steps),
            "length": self.t.copy(),
            "coin_at_exit": self.coin_at_exit.copy(),
            "level_seed": self.level_seed.copy(),
        }

    def close(self, **kwargs) -> None:
        self._env = None
        self._side.envs.clear()
