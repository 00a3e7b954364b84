"""CoinRun organisms: the planner (expert and reachability), rollouts with coin/exit records, and coin steering."""
