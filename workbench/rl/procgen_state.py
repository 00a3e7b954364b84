"""Parse and rebuild procgen 0.10.7 game states (the bytes of `env.callmethod("get_state")`), and edit them.

Why byte surgery: procgen's C++ games cannot be told where to put the cheese, the mouse or the coin. Their serialised
state can: it holds the tile grid (cheese and coin are tiles), the entity list (the mouse / the CoinRun agent) and
every counter. `parse` reads the whole state into named fields and `ProcgenState.to_bytes` writes exactly the same
bytes back (tested: parse -> serialise == original), so an edit changes only the fields it names.

Layout (little-endian int32/float32; a string is an int32 length then bytes), as written by procgen's
Game::serialize, BasicAbstractGame::serialize and the game's own serialize:
  header scalars (version, game name, options, seeds, two RNG states, step data, counters)
  grid_size, entity count, entities (31 fields each: x, y, vx, vy, rx, ry, type, ...)
  body scalars (background, action, physics, asset RNG state, view)
  grid: w, h, n, n x int32 tiles, indexed [y * w + x] with y = 0 at the BOTTOM of the picture
  game tail (maze: maze_dim, world_dim; coinrun: last_agent_y, wall_theme, flags, gravity, air_control), end marker.
We read it to understand the layout (procgen's C++ source and UlisseMini/procgen-tools, written for a fork); this
code is our own and targets the upstream 0.10.7 wheel.

Coordinates for users are (row, col) with row 0 at the TOP, like `workbench.rl.envs.maze`: row = h - 1 - y, col = x.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

import numpy as np

from workbench.errors import WorkbenchError

# Tile ids (procgen object ids)
MAZE_SPACE, MAZE_WALL, MAZE_CHEESE = 100, 51, 2
COIN_SPACE, COIN_GOAL, WALL_MID, WALL_TOP, LAVA_MID, LAVA_TOP, ENEMY_BARRIER = 100, 1, 15, 16, 17, 18, 19
PLAYER = 0  # entity type of the agent (mouse / CoinRun alien)
CRATE, SAW, ENEMY = 20, 2, 5
END_MARKER = struct.unpack("<i", struct.pack("<I", 0xCAFECAFE))[0]

# (name, kind): i int32, f float32, s string, r RNG state (is_seeded int + string)
_HEAD = (
    [("serialize_version", "i"), ("game_name", "s")]
    + [
        (f"options.{k}", "i")
        for k in (
            "paint_vel_info",
            "use_generated_assets",
            "use_monochrome_assets",
            "restrict_themes",
            "use_backgrounds",
            "center_agent",
            "debug_mode",
            "distribution_mode",
            "use_sequential_levels",
            "use_easy_jump",
            "plain_assets",
            "physics_mode",
        )
    ]
    + [(k, "i") for k in ("grid_step", "level_seed_low", "level_seed_high", "game_type", "game_n")]
    + [("level_seed_rand_gen", "r"), ("rand_gen", "r"), ("step_data.reward", "f")]
    + [
        (k, "i")
        for k in (
            "step_data.done",
            "step_data.level_complete",
            "action",
            "timeout",
            "current_level_seed",
            "prev_level_seed",
            "episodes_remaining",
            "episode_done",
            "last_reward_timer",
        )
    ]
    + [("last_reward", "f")]
    + [(k, "i") for k in ("default_action", "fixed_asset_seed", "cur_time", "is_waiting_for_step", "grid_size")]
)
_BODY = [
    ("use_procgen_background", "i"),
    ("background_index", "i"),
    ("bg_tile_ratio", "f"),
    ("bg_pct_x", "f"),
    ("char_dim", "f"),
    ("last_move_action", "i"),
    ("move_action", "i"),
    ("special_action", "i"),
    ("mixrate", "f"),
    ("maxspeed", "f"),
    ("max_jump", "f"),
    ("action_vx", "f"),
    ("action_vy", "f"),
    ("action_vrot", "f"),
    ("center_x", "f"),
    ("center_y", "f"),
    ("random_agent_start", "i"),
    ("has_useful_vel_info", "i"),
    ("step_rand_int", "i"),
    ("asset_rand_gen", "r"),
    ("main_width", "i"),
    ("main_height", "i"),
    ("out_of_bounds_object", "i"),
    ("unit", "f"),
    ("view_dim", "f"),
    ("x_off", "f"),
    ("y_off", "f"),
    ("visibility", "f"),
    ("min_visibility", "f"),
]
_TAILS = {
    "maze": [("maze_dim", "i"), ("world_dim", "i")],
    "coinrun": [
        ("last_agent_y", "f"),
        ("wall_theme", "i"),
        ("has_support", "i"),
        ("facing_right", "i"),
        ("is_on_crate", "i"),
        ("gravity", "f"),
        ("air_control", "f"),
    ],
}
_ENTITY_FIELDS = (
    [(k, "<f4") for k in ("x", "y", "vx", "vy", "rx", "ry")]
    + [(k, "<i4") for k in ("type", "image_type", "image_theme", "render_z", "will_erase", "collides_with_entities")]
    + [(k, "<f4") for k in ("collision_margin", "rotation", "vrot")]
    + [(k, "<i4") for k in ("is_reflected", "fire_time", "spawn_time", "life_time", "expire_time", "use_abs_coords")]
    + [("friction", "<f4")]
    + [(k, "<i4") for k in ("smart_step", "avoids_collisions", "auto_erase")]
    + [(k, "<f4") for k in ("alpha", "health", "theta", "grow_rate", "alpha_decay", "climber_spawn_x")]
)
ENTITY_DTYPE = np.dtype(_ENTITY_FIELDS)  # 124 bytes, packed


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def take(self, kind: str):
        d = self.data
        if self.i + 4 > len(d):
            raise WorkbenchError(f"procgen state ends early at byte {self.i} of {len(d)}; not a procgen 0.10.7 state")
        if kind == "i":
            v = struct.unpack_from("<i", d, self.i)[0]
            self.i += 4
            return v
        if kind == "f":
            v = struct.unpack_from("<f", d, self.i)[0]
            self.i += 4
            return v
        if kind == "s":
            n = self.take("i")
            if n < 0 or self.i + n > len(d):
                raise WorkbenchError(f"procgen state has a bad string length {n} at byte {self.i - 4}")
            v = d[self.i : self.i + n]
            self.i += n
            return v
        if kind == "r":
            return (self.take("i"), self.take("s"))
        raise AssertionError(kind)


def _write(kind: str, v) -> bytes:
    if kind == "i":
        return struct.pack("<i", int(v))
    if kind == "f":
        return struct.pack("<f", float(v))
    if kind == "s":
        return struct.pack("<i", len(v)) + bytes(v)
    if kind == "r":
        return _write("i", v[0]) + _write("s", v[1])
    raise AssertionError(kind)


@dataclass
class ProcgenState:
    """One game's full state. `head`/`body`/`tail` map field names to values in serialisation order; `entities` is a
    structured array (E,) of ENTITY_DTYPE; `grid` is (h, w) int32 indexed [y, x] as procgen stores it (y up)."""

    head: dict
    entities: np.ndarray
    body: dict
    grid: np.ndarray
    tail: dict
    extra: bytes = b""  # anything after the known tail (kept verbatim)
    meta: dict = field(default_factory=dict)

    @property
    def game(self) -> str:
        return self.head["game_name"].decode()

    def to_bytes(self) -> bytes:
        """Serialise back to procgen's byte layout (inverse of `parse`)."""
        out = [_write(k, self.head[n]) for n, k in _HEAD]
        out.append(_write("i", len(self.entities)))
        out.append(np.ascontiguousarray(self.entities, dtype=ENTITY_DTYPE).tobytes())
        out += [_write(k, self.body[n]) for n, k in _BODY]
        h, w = self.grid.shape
        out.append(struct.pack("<iii", w, h, w * h))
        out.append(np.ascontiguousarray(self.grid, dtype="<i4").tobytes())
        out += [_write(k, self.tail[n]) for n, k in _TAILS.get(self.game, [])]
        out.append(self.extra)
        return b"".join(out)

    def copy(self) -> ProcgenState:
        return replace(
            self,
            head=dict(self.head),
            entities=self.entities.copy(),
            body=dict(self.body),
            grid=self.grid.copy(),
            tail=dict(self.tail),
        )

    # ---- geometry in (row, col), row 0 at the top
    @property
    def height(self) -> int:
        return int(self.grid.shape[0])

    def tiles(self) -> np.ndarray:
        """(h, w) int32 tile ids in picture orientation (row 0 at the top)."""
        return self.grid[::-1]

    def to_rowcol(self, x: float, y: float) -> tuple[int, int]:
        return self.height - 1 - int(y), int(x)

    def agent_index(self) -> int:
        hits = np.flatnonzero(self.entities["type"] == PLAYER)
        if hits.size == 0:
            raise WorkbenchError("procgen state has no agent entity")
        return int(hits[0])

    def agent_cell(self) -> tuple[int, int]:
        """(row, col) of the cell holding the agent's centre."""
        a = self.entities[self.agent_index()]
        return self.to_rowcol(float(a["x"]), float(a["y"]))

    def set_tile(self, cell: tuple[int, int], tile: int) -> None:
        r, c = cell
        self.grid[self.height - 1 - r, c] = tile

    def tile(self, cell: tuple[int, int]) -> int:
        r, c = cell
        return int(self.grid[self.height - 1 - r, c])

    def cells_of(self, tile: int) -> np.ndarray:
        """(K, 2) (row, col) of every tile with this id."""
        return np.argwhere(self.tiles() == tile)


def parse(data: bytes) -> ProcgenState:
    """Read one procgen 0.10.7 state (maze or coinrun; other games parse up to their grid and keep the rest raw)."""
    if not isinstance(data, bytes | bytearray) or len(data) < 16:
        raise WorkbenchError("not a procgen state: expected the bytes of env.callmethod('get_state')[i]")
    rd = _Reader(bytes(data))
    head = {}
    for name, kind in _HEAD:
        head[name] = rd.take(kind)
        if name == "serialize_version" and head[name] != 0:
            raise WorkbenchError(f"procgen state version {head[name]} is not 0 (procgen 0.10.7 expected)")
    n_ent = rd.take("i")
    size = n_ent * ENTITY_DTYPE.itemsize
    if n_ent < 0 or rd.i + size > len(rd.data):
        raise WorkbenchError(f"procgen state has a bad entity count {n_ent}")
    entities = np.frombuffer(rd.data, dtype=ENTITY_DTYPE, count=n_ent, offset=rd.i).copy()
    rd.i += size
    body = {name: rd.take(kind) for name, kind in _BODY}
    w, h, n = rd.take("i"), rd.take("i"), rd.take("i")
    if n != w * h or rd.i + 4 * n > len(rd.data):
        raise WorkbenchError(f"procgen state has a bad grid ({w} x {h}, {n} tiles)")
    grid = np.frombuffer(rd.data, dtype="<i4", count=n, offset=rd.i).reshape(h, w).astype(np.int32)
    rd.i += 4 * n
    game = head["game_name"].decode()
    tail = {name: rd.take(kind) for name, kind in _TAILS.get(game, [])}
    return ProcgenState(head=head, entities=entities, body=body, grid=grid, tail=tail, extra=rd.data[rd.i :])


def agent_xy(data: bytes) -> tuple[float, float]:
    """The agent's (x, y) read straight from the bytes (skips the rest): the per-step fast path for bookkeeping."""
    i = 4
    (n,) = struct.unpack_from("<i", data, i)
    i += 4 + n + 17 * 4
    for _ in range(2):  # two RNG states
        (n,) = struct.unpack_from("<i", data, i + 4)
        i += 8 + n
    i += 15 * 4  # step data and counters, then grid_size
    i += 4
    (n_ent,) = struct.unpack_from("<i", data, i)
    i += 4
    ents = np.frombuffer(data, dtype=ENTITY_DTYPE, count=n_ent, offset=i)
    k = np.flatnonzero(ents["type"] == PLAYER)
    if k.size == 0:
        raise WorkbenchError("procgen state has no agent entity")
    return float(ents["x"][k[0]]), float(ents["y"][k[0]])


# --------------------------------------------------------------------------------------------------------- maze
@dataclass
class MazeView:
    """A maze state in workbench terms: walls (W, W) bool, mouse and cheese (row, col), the maze block inside the
    world (`offset`, `size`, like `workbench.rl.envs.maze.MazeLevels`)."""

    state: ProcgenState

    @property
    def world_size(self) -> int:
        return self.state.height

    @property
    def size(self) -> int:
        return int(self.state.tail["maze_dim"])

    @property
    def offset(self) -> int:
        return (self.world_size - self.size) // 2

    def walls(self) -> np.ndarray:
        return self.state.tiles() == MAZE_WALL

    def mouse(self) -> tuple[int, int]:
        return self.state.agent_cell()

    def cheese(self) -> tuple[int, int] | None:
        cells = self.state.cells_of(MAZE_CHEESE)
        return None if len(cells) == 0 else (int(cells[0, 0]), int(cells[0, 1]))

    def corner(self) -> tuple[int, int]:
        """The maze's top-right cell (always a room, so always free)."""
        return self.offset, self.offset + self.size - 1

    def region_cells(self, region: int) -> np.ndarray:
        """(K, 2) free cells of the maze's top-right r x r block."""
        r = min(region, self.size)
        top, right = self.offset, self.offset + self.size
        free = ~self.walls()
        block = np.zeros_like(free)
        block[top : top + r, right - r : right] = True
        return np.argwhere(free & block)

    def in_region(self, cell: tuple[int, int], region: int) -> bool:
        r = min(region, self.size)
        top, right = self.offset, self.offset + self.size
        return top <= cell[0] < top + r and right - r <= cell[1] < right


def _check_free(view: MazeView, cell: tuple[int, int], what: str) -> tuple[int, int]:
    r, c = int(cell[0]), int(cell[1])
    w = view.world_size
    if not (0 <= r < w and 0 <= c < w):
        raise WorkbenchError(f"{what} cell ({r}, {c}) is outside the {w}x{w} maze world")
    if view.walls()[r, c]:
        raise WorkbenchError(f"{what} cell ({r}, {c}) is a wall; choose a free cell")
    return r, c


def maze_with_cheese(state: ProcgenState, cell: tuple[int, int] | None) -> ProcgenState:
    """A copy with the cheese moved to `cell` (row, col), or removed when `cell` is None. Refuses walls."""
    out = state.copy()
    view = MazeView(out)
    if cell is not None:
        cell = _check_free(view, cell, "cheese")
    out.grid[out.grid == MAZE_CHEESE] = MAZE_SPACE
    if cell is not None:
        out.set_tile(cell, MAZE_CHEESE)
    return out


def maze_with_mouse(state: ProcgenState, cell: tuple[int, int]) -> ProcgenState:
    """A copy with the mouse moved to the centre of `cell` (row, col). Refuses walls."""
    out = state.copy()
    r, c = _check_free(MazeView(out), cell, "mouse")
    k = out.agent_index()
    out.entities["x"][k] = c + 0.5
    out.entities["y"][k] = out.height - 1 - r + 0.5
    return out


def maze_open_top_right(state: ProcgenState) -> ProcgenState:
    """A copy with the maze's top row and right column cleared: an open corridor along the top and right edges
    leads to the top-right corner (the counterfactual for a "top-right vector")."""
    out = state.copy()
    view = MazeView(out)
    top, right = view.offset, view.offset + view.size - 1
    tiles = out.tiles().copy()
    for r, c in [(top, c) for c in range(view.offset, right + 1)] + [(r, right) for r in range(top, top + view.size)]:
        if tiles[r, c] == MAZE_WALL:
            tiles[r, c] = MAZE_SPACE
    out.grid = tiles[::-1].copy()
    return out


def maze_top_right_path(state: ProcgenState) -> ProcgenState:
    """A copy with procgen-tools' top-right path (`make_top_right_path`, used for Turner et al.'s top-right vector): a
    corridor cut through the wall padding from the maze's top-right cell straight up to the world's top row, then
    right along it to the world's top-right cell. Unlike `maze_open_top_right` the maze stays perfect: the corridor
    touches the maze only at its corner, so every free cell is still reached by exactly one path. Refuses non-maze
    states and mazes that fill the world (no padding to cut through)."""
    if state.game != "maze":
        raise WorkbenchError(f"maze_top_right_path needs a maze state, got a {state.game!r} state")
    out = state.copy()
    view = MazeView(out)
    top, right = view.corner()
    w = view.world_size
    if top <= 0:
        raise WorkbenchError(
            f"the {view.size}x{view.size} maze fills its {w}x{w} world: no padding to cut a top-right path through"
        )
    tiles = out.tiles().copy()
    corridor = [(r, right) for r in range(top)] + [(0, c) for c in range(right + 1, w)]
    for r, c in corridor:
        if tiles[r, c] == MAZE_WALL:
            tiles[r, c] = MAZE_SPACE
    out.grid = tiles[::-1].copy()
    return out


# ------------------------------------------------------------------------------------------------------ coinrun
@dataclass
class CoinRunView:
    """A CoinRun state in workbench terms: the coin tile(s), the agent, and the level's exit column (the last
    column before the wall that ends the level; where the coin sits in an unedited level)."""

    state: ProcgenState

    def coin(self) -> tuple[int, int] | None:
        cells = self.state.cells_of(COIN_GOAL)
        return None if len(cells) == 0 else (int(cells[0, 0]), int(cells[0, 1]))

    def agent_xy(self) -> tuple[float, float]:
        a = self.state.entities[self.state.agent_index()]
        return float(a["x"]), float(a["y"])

    def surface_cells(self, min_col: int, max_col: int) -> np.ndarray:
        """(K, 2) standable cells in columns min_col..max_col: free, with solid ground right below and no crate,
        saw or enemy entity in them. One per column (the lowest such cell), the places a coin can sit."""
        tiles = self.state.tiles()
        h, w = tiles.shape
        blocked = set()
        for e in self.state.entities:
            if int(e["type"]) in (CRATE, SAW, ENEMY):
                blocked.add(self.state.to_rowcol(float(e["x"]), float(e["y"])))
        out = []
        for c in range(max(min_col, 0), min(max_col, w - 1) + 1):
            for r in range(h - 2, 0, -1):
                if tiles[r, c] in (COIN_SPACE,) and tiles[r + 1, c] in (WALL_MID, WALL_TOP) and (r, c) not in blocked:
                    out.append((r, c))
                    break
        return np.array(out, dtype=np.int64).reshape(-1, 2)


def coinrun_with_coin(state: ProcgenState, cell: tuple[int, int] | None) -> ProcgenState:
    """A copy with the coin moved to `cell` (row, col), or removed when None. Refuses solid or lava cells."""
    out = state.copy()
    if cell is not None:
        r, c = int(cell[0]), int(cell[1])
        h, w = out.grid.shape
        if not (0 <= r < h and 0 <= c < w):
            raise WorkbenchError(f"coin cell ({r}, {c}) is outside the {h}x{w} CoinRun world")
        t = out.tile((r, c))
        if t not in (COIN_SPACE, COIN_GOAL, ENEMY_BARRIER):
            raise WorkbenchError(f"coin cell ({r}, {c}) is solid or lava (tile {t}); choose a free cell")
    out.grid[out.grid == COIN_GOAL] = COIN_SPACE
    if cell is not None:
        out.set_tile((r, c), COIN_GOAL)
    return out
