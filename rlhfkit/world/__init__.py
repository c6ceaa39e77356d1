"""The instruction world: rlhfkit's offline reproduction of the InstructGPT setting
(docs/world.md). Pure Python, no torch, so any user can call the gold judge.

- tasks: the eight task families, `Task`, `sample_task`, `parse_instruction`
- judge: the gold judge `gold_score` / `judge`, Likert, `win_rate`
- demonstrators: simulated demonstrators, `make_demonstrations`
- labelers: simulated labelers with noise and a length bias, `make_comparisons`,
  agreement and noise calibration
- webtext: the pretraining corpus, capable but misaligned, `make_webtext`
- splits: disjoint seeded splits, `make_split`
"""
from rlhfkit.world.demonstrators import (
    CHATTER,
    DemonstratorMix,
    correct_answer,
    demonstrate,
    make_demonstrations,
    near_miss,
    respond,
    verbose_answer,
)
from rlhfkit.world.judge import (
    IMPOLITE_WORDS,
    JudgeResult,
    gold_rewards,
    gold_score,
    instruction_of,
    judge,
    normalise,
    win_rate,
)
from rlhfkit.world.labelers import (
    DEFAULT_NOISE_STD,
    LabelerConfig,
    calibrate_noise,
    compare,
    labeler_agreement,
    make_comparisons,
    oracle_agreement,
    pairwise_agreement,
    proxy_samples,
    rank,
    recompute_agreement,
)
from rlhfkit.world.splits import SPLITS, iter_split, make_split
from rlhfkit.world.tasks import (
    ANIMALS,
    COLORS,
    FAMILIES,
    FRUITS,
    WORDS,
    Task,
    build_task,
    parse_instruction,
    sample_task,
)
from rlhfkit.world.webtext import WebTextMix, default_chat_render, make_webtext, make_webtext_labeled

__all__ = [
    "ANIMALS", "CHATTER", "COLORS", "DEFAULT_NOISE_STD", "FAMILIES", "FRUITS", "IMPOLITE_WORDS", "SPLITS",
    "WORDS", "DemonstratorMix", "JudgeResult", "LabelerConfig", "Task", "WebTextMix", "build_task",
    "calibrate_noise", "compare", "correct_answer", "default_chat_render", "demonstrate", "gold_rewards", "gold_score", "instruction_of",
    "iter_split", "judge", "labeler_agreement", "make_comparisons", "make_demonstrations", "make_split",
    "make_webtext", "make_webtext_labeled", "near_miss", "normalise", "oracle_agreement",
    "pairwise_agreement", "parse_instruction", "proxy_samples", "rank", "recompute_agreement", "respond",
    "sample_task", "verbose_answer", "win_rate",
]
