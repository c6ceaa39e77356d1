"""Data layer: load any preference/demonstration data into canonical records,
tokenise with exact prompt/completion masks, and collate (padding, K-way rankings,
packing, length grouping).

    records = load_preferences("hh.jsonl")                   # PreferenceRecord | RankingRecord
    groups = encode_rankings(tok, as_rankings(records), max_length=512)
    batch = RankingCollator(tok.pad_token_id)(groups[:8])     # each response forwarded once
"""
from rlhfkit.data.collate import (
    PackedCollator,
    PackedExample,
    RankingCollator,
    SFTCollator,
    block_causal_mask,
    length_grouped_indices,
    pack_examples,
    pad_sequences,
    position_ids_from_mask,
    scatter_scores,
)
from rlhfkit.data.errors import DataError, DataList, SkipReport
from rlhfkit.data.formats import ColumnMap
from rlhfkit.data.loading import (
    as_pairs,
    as_rankings,
    load_labeled,
    load_preferences,
    load_prompts,
    load_sft,
    read_rows,
)
from rlhfkit.data.records import (
    LabeledRecord,
    Message,
    PreferenceRecord,
    Prompt,
    PromptRecord,
    RankingRecord,
    SFTRecord,
)
from rlhfkit.data.tokenize import (
    EncodedExample,
    encode_labeled,
    encode_prompt,
    encode_prompt_completion,
    encode_prompts,
    encode_ranking,
    encode_rankings,
    encode_sft,
    prompt_token_ids,
    render_prompt,
)

__all__ = [
    "ColumnMap", "DataError", "DataList", "SkipReport",
    "SFTRecord", "PreferenceRecord", "RankingRecord", "PromptRecord", "LabeledRecord", "Message", "Prompt",
    "read_rows", "load_sft", "load_preferences", "load_prompts", "load_labeled", "as_rankings", "as_pairs",
    "EncodedExample", "render_prompt", "prompt_token_ids", "encode_prompt", "encode_prompt_completion",
    "encode_ranking", "encode_sft", "encode_rankings", "encode_prompts", "encode_labeled",
    "pad_sequences", "position_ids_from_mask", "SFTCollator", "RankingCollator", "scatter_scores",
    "PackedExample", "pack_examples", "PackedCollator", "block_causal_mask", "length_grouped_indices",
]
