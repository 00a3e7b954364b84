"""Activation datasets: the on-disk format and `ActivationDataset` (`dataset`), writers (`writers`) and prompt
collection for language models (`prompts`). RL collectors are `workbench.rl.collect`."""
