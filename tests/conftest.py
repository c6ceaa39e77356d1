import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from rlhfkit.testing import save_tiny_model  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

# Tests that start other processes, kill them or drive a browser take minutes: each is slow
# too, so that `pytest -m "not slow"` is the fast subset (README.md) with one marker. So is
# every test that reads a micro world run (a fixture that trains every stage of the world).
SLOW_KINDS = ("multiprocess", "browser", "kill")
WORLD_RUN_FIXTURES = ("micro_run", "two_seeds", "standins")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS) or \
                any(f in getattr(item, "fixturenames", ()) for f in WORLD_RUN_FIXTURES):
            item.add_marker(pytest.mark.slow)
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama and its tokenizer saved as a plain Hugging Face directory."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def read_metrics(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
