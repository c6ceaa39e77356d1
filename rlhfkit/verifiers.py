"""Old home of rlhfkit.rewards.verifiers, kept because saved configs and recipes name
their reward functions by path ("rlhfkit.verifiers:answer_reward" in a run's config.yaml):
importing this module gives the same module object, so those specs resolve to the same
functions. New code imports rlhfkit.rewards.verifiers."""
import sys

from rlhfkit.rewards import verifiers

sys.modules[__name__] = verifiers
