"""Language-model subjects: a synthetic persona corpus, a word-level tokenizer, tiny TransformerLens models trained
by our own recipe, offline loading of pretrained models, persona/truth directions, and steering experiments.

The model is a plain `transformer_lens.HookedTransformer`, so `workbench.hooks`, `workbench.interventions`,
`workbench.activations.collect_prompts` and `workbench.probes` apply to it unchanged.
"""
