"""Keys and chests (Langosco et al. 2022): the native env, its expert, rollouts, probes and steering, and its kind."""
