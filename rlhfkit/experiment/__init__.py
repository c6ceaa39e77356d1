"""The InstructGPT experiment in the instruction world (`rlhfkit run`, docs/world.md):
it trains every stage of the recipe on the world's data and measures each model
against the world's gold judge. The world itself, a simulator without torch, is
rlhfkit.world; this package is what trains and evaluates in it.

- options: RunConfig, and the world's defaults for each stage's trainer options
- run: `run_world`, the stages in order; stages: one function per stage
- data, sampling, comparisons, reward_figures: the data files, batched sampling,
  the labelled rankings, the reward model's held-out figures
- layout: where each seed's stages live (--seeds); intervals: every figure's 95%
  interval over prompts and seeds, the pairwise tests, Kendall's tau
- evaluate, report (report_markdown, report_plots, labels): the figures of each
  model, report.json and report.md
- sweep (`rlhfkit world sweep-kl`), feedback (RLAIF), pretrain (`rlhfkit world
  pretrain`: the base models the world ships)
"""
