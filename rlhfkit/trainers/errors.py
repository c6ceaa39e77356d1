"""Errors the trainers (and other commands) raise for the CLI to report in one line."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or resumed, or the output directory is in use."""


class DiskFullError(CheckpointError):
    """A checkpoint or a model could not be written for want of space; nothing half-written is left."""


class DivergenceError(RuntimeError):
    """Too many consecutive non-finite steps; no checkpoint is written from them."""


class MissingExtraError(ImportError):
    """An optional dependency a command needs is not installed; the message names the extra."""


def require_extra(extra: str, *modules: str) -> None:
    """Import `modules` now, or raise MissingExtraError saying `pip install 'rlhfkit[extra]'`."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            raise MissingExtraError(f"{name} is not installed ({e.name} missing); this command needs the optional "
                                    f"extra: pip install 'rlhfkit[{extra}]'") from None
