"""Tier 1: answer extraction, matching and the verifier reward functions, through
Python and through the same route the CLI's --reward_functions takes."""
import pytest
import torch

from rlhfkit.rewards import verifiers as v
from rlhfkit.rewards import FunctionScorer, ScoringBatch, WeightedReward, import_function


@pytest.mark.parametrize("text,expected", [
    ("7+6+0=13\nAnswer: 933", "933"),
    ("Answer: 1\nthen more\nFinal answer: 42.", "42."),
    ("answer = 7", "7"),
    ("no final line", None),
])
def test_answer_line_takes_the_last(text, expected):
    assert v.answer_line(text) == expected


def test_boxed_keeps_nested_braces_and_takes_the_last():
    assert v.boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert v.boxed(r"\boxed{12") is None
    assert v.boxed("nothing") is None


def test_last_number_and_auto_fall_back_in_order():
    assert v.last_number("from 3 to 1,234.5 then -7") == "-7"
    assert v.last_number("a ratio of 3/4") == "3/4"
    assert v.auto("x \\boxed{5} and 9") == "5"
    assert v.auto("Answer: 12\n\\boxed{5}") == "12"
    assert v.auto("so it is 9") == "9"
    assert v.auto("no digits") is None


def test_matching():
    assert v.exact_match(" $933$. ", "933") and not v.exact_match("933", "932")
    assert v.exact_match(r"\text{Paris}", "paris")
    assert v.numeric_match("1,234", "1234") and v.numeric_match("0.50", "1/2") and v.numeric_match("50%", "0.5")
    assert not v.numeric_match("1235", "1234") and not v.numeric_match(None, "1")
    assert v.numeric_match("blue", "Blue")  # not numbers: exact match
    assert v.parse_number("abc") is None and v.parse_number("1/0") is None


def test_reward_functions_score_a_batch():
    responses = ["4+8=12\nAnswer: 12", "Answer: 13", "it is \\boxed{12}", "12", "Answer: 12\nAnswer: 12"]
    meta = [{"answer": "12"}] * 5
    assert v.answer_reward([""] * 5, responses, meta) == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert v.boxed_answer_reward([""] * 5, responses, meta) == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert v.format_reward([""] * 5, responses) == [1.0, 0.0, 0.0, 0.0, 0.0]
    strict = v.make_answer_reward("answer_line", "exact", answer_key="gold")
    assert strict.__name__ == "exact_answer_line_reward"
    assert strict([""], ["Answer: 12"], [{"gold": "12"}]) == [1.0]
    with pytest.raises(ValueError, match="no 'answer' column"):
        v.answer_reward([""], ["Answer: 1"], [{}])
    with pytest.raises(ValueError):
        v.make_answer_reward("guess")


def test_verifiers_resolve_like_any_cli_reward_function_and_report_each_score():
    fns = [import_function("rlhfkit.rewards.verifiers:answer_reward"), import_function("rlhfkit.rewards.verifiers:format_reward")]
    reward = WeightedReward([FunctionScorer(f) for f in fns], {"format_reward": 0.5}, [f.__name__ for f in fns])
    responses = ["1+1=2\nAnswer: 2", "Answer: 3"]
    batch = ScoringBatch(prompt_ids=torch.zeros(2, 1, dtype=torch.long), prompt_mask=torch.ones(2, 1),
                         response_ids=torch.zeros(2, 1, dtype=torch.long), response_mask=torch.ones(2, 1),
                         prompts=["1+1", "1+1"], responses=responses, eos=torch.ones(2, dtype=torch.bool),
                         metadata=[{"answer": "2"}, {"answer": "2"}])
    total, parts = reward(batch)
    assert total.tolist() == [1.5, 0.0]
    assert parts == {"objective/scores_answer_reward": 0.5, "objective/scores_format_reward": 0.5}


def test_a_number_too_large_for_a_float_is_unparseable_not_an_error():
    from rlhfkit.rewards.verifiers import numeric_match, parse_number

    assert parse_number("1e400") is None and parse_number("9" * 400) is None
    assert not numeric_match("1e400", "12")


def test_reward_weights_go_by_name_whatever_the_order_and_a_wrong_name_is_refused():
    fns = [import_function("rlhfkit.rewards.verifiers:answer_reward"), import_function("rlhfkit.rewards.verifiers:format_reward")]
    # answer_reward [1, 0, 1, 0], format_reward [1, 0, 0, 1] (an Answer line after working)
    responses = ["1+1=2\nAnswer: 2", "Answer: 3", "The sum is 2", "1+1=3\nAnswer: 3"]
    batch = ScoringBatch(prompt_ids=torch.zeros(4, 1, dtype=torch.long), prompt_mask=torch.ones(4, 1),
                         response_ids=torch.zeros(4, 1, dtype=torch.long), response_mask=torch.ones(4, 1),
                         prompts=["1+1"] * 4, responses=responses, eos=torch.ones(4, dtype=torch.bool),
                         metadata=[{"answer": "2"}] * 4)
    weights = {"format_reward": 0.25}  # answer_reward: 1 when not given
    forward = WeightedReward([FunctionScorer(f) for f in fns], weights, [f.__name__ for f in fns])
    backward = WeightedReward([FunctionScorer(f) for f in fns[::-1]], weights, [f.__name__ for f in fns[::-1]])
    assert forward(batch)[0].tolist() == backward(batch)[0].tolist() == [1.25, 0.0, 1.0, 0.25]
    with pytest.raises(ValueError, match="no reward is named 'format'.*answer_reward, format_reward.*format_reward"):
        WeightedReward([FunctionScorer(f) for f in fns], {"format": 1.0}, [f.__name__ for f in fns])
    with pytest.raises(ValueError, match="two rewards are named 'answer_reward'"):
        WeightedReward([FunctionScorer(fns[0])] * 2, None, ["answer_reward"] * 2)


def test_reward_weights_read_from_the_command_line_as_name_value_pairs():
    from rlhfkit.config import ConfigError, from_dict
    from rlhfkit.trainers.ppo.config import PPOConfig

    cfg = from_dict(PPOConfig, {"reward_weights": "rm=1,format_reward=0.1"})
    assert cfg.reward_weights == {"rm": 1.0, "format_reward": 0.1}
    with pytest.raises(ConfigError, match="expected name=value pairs"):
        from_dict(PPOConfig, {"reward_weights": "1,0.1"})


def test_the_old_verifiers_path_in_saved_configs_resolves_to_the_same_functions():
    assert import_function("rlhfkit.verifiers:answer_reward") is v.answer_reward
