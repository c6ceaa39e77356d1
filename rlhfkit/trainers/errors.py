"""Errors the trainers raise for the CLI to report in one line."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or resumed, or the output directory is in use."""


class DivergenceError(RuntimeError):
    """Too many consecutive non-finite steps; no checkpoint is written from them."""
