"""Feedback from people and from models.

People: `rlhfkit label serve` shows each prompt with its K responses to labelers, who
rank them, give each a Likert score of 1-7 and may flag it (InstructGPT's interface,
Ouyang et al. 2022, appendix B); labels live in SQLite (`store.py`), and
`rlhfkit label export` writes the K-way rankings `rlhfkit rm` reads and the pairs
`rlhfkit dpo` reads (`export.py`), `rlhfkit label stats` the inter-labeler agreement.

Models: `rlhfkit label ai` ranks the same items with a causal LM judge by Constitutional
AI's multiple-choice method (`ai.py`), and `rlhfkit label revise` writes SFT data by
critique and revision under a principle (`revise.py`). `rlhfkit label sample` makes the
items: K sampled responses per prompt (`sample.py`).

Only `server.py` needs the web extra (`pip install 'rlhfkit[label]'`); the rest imports
the standard library, and torch where a model is run.
"""
