"""Where each seed's stages live in a run directory.

One seed (the default) keeps everything in the run directory, as it always has:

    <run>/data/  sft/  comparisons/  rm/  ppo/ ...  eval/  report.json

With `--seeds 0,1,2`, the run's own seed (`--seed`, default 0) keeps that layout,
so seeds can be added to a finished one-seed run; every other seed gets its own
directory under seeds/. With seed_scope `methods` (the default) the recipe that
the methods learn from (SFT, comparisons, reward model) is the run's own and
shared; with `all` each seed trains its own:

    <run>/seeds/1/ppo/  rloo/ ...  eval/             (seed_scope methods)
    <run>/seeds/1/sft/  comparisons/  rm/  ppo/ ...  (seed_scope all)

The data (the world's prompt splits) is always shared, so every model of every
seed is evaluated on the same prompts: the intervals pair over them. The base
models are never trained, so they are evaluated once, in <run>/eval/.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SeedLayout:
    """The directories of one seed of a run."""

    run: Path  # data/, config.yaml, report.*, and the base models' evaluation (eval/)
    recipe: Path  # sft/, comparisons/, rm/, sft_large/, comparisons_ai/, rm_ai/, orpo_data/
    methods: Path  # the method stages (ppo/, rloo/, dpo/, ...) and their evaluation (eval/)
    seed: int  # the seed of the method stages
    recipe_seed: int  # the seed the recipe's stages were trained with

    @classmethod
    def single(cls, run: Path, seed: int) -> SeedLayout:
        """A run of one seed: everything in the run directory."""
        return cls(run=run, recipe=run, methods=run, seed=seed, recipe_seed=seed)

    @property
    def data(self) -> Path:
        return self.run / "data"

    @property
    def sft(self) -> Path:
        return self.recipe / "sft"

    @property
    def comparisons(self) -> Path:
        return self.recipe / "comparisons"

    @property
    def rm(self) -> Path:
        return self.recipe / "rm"

    def eval_dir(self, model: str) -> Path:
        """Where a model's evaluation lives: the bases' once for the run, SFT with the recipe,
        every method with its seed."""
        if model in ("base_small", "base_large"):
            return self.run / "eval"
        return (self.recipe if model == "sft" else self.methods) / "eval"

    def stage_name(self, name: str) -> str:
        """A stage's name in the run's progress lines: `ppo`, or `ppo seed 1` for another seed."""
        return name if self.methods == self.run else f"{name} seed {self.seed}"


def seed_layout(run: Path, run_seed: int, seed: int, scope: str) -> SeedLayout:
    """The layout of `seed` in a run whose own seed is `run_seed`, for seed_scope `scope`."""
    if seed == run_seed:
        return SeedLayout.single(run, seed)
    methods = run / "seeds" / str(seed)
    if scope == "all":
        return SeedLayout(run=run, recipe=methods, methods=methods, seed=seed, recipe_seed=seed)
    return SeedLayout(run=run, recipe=run, methods=methods, seed=seed, recipe_seed=run_seed)
