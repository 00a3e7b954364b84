"""The native maze subject kind (`kind.py`); the env itself is `workbench.rl.envs.maze`."""
