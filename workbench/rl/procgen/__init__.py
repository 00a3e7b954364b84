"""Real procgen subjects: published-format checkpoints on procgen Maze and CoinRun (`kind.py`, `levels.py`)."""
