"""The labeling database and its exports: assignment, resume, validation, the rankings
and pairs `rlhfkit rm` and `rlhfkit dpo` read, inter-labeler agreement."""
import json

import pytest

from rlhfkit.cli import main
from rlhfkit.data.errors import DataError
from rlhfkit.data.loading import as_pairs, load_preferences
from rlhfkit.data.records import RankingRecord
from rlhfkit.label.export import ExportConfig, agreement, export_labels, label_stats, read_labels
from rlhfkit.label.store import LabelError, Store

from conftest import read_metrics, write_jsonl

WORDS = ["cat", "dog", "red", "fig", "owl", "pear", "lime", "bee"]


def _items(n=4, k=3):
    return [{"id": f"q{i}", "prompt": f"Say {w}.", "responses": [f"{w} gold gold.", f"{w} gold.", f"{w}.", f"no {w}"][:k]}
            for i, w in enumerate(WORDS[:n])]


def _label(store, who, best_first=True, flags=None):
    item = store.next_item(who)
    k = len(item.responses)
    order = list(range(k)) if best_first else list(range(k))[::-1]
    store.submit(who, item.id, order, [7 - order.index(i) for i in range(k)], flags, seconds=3.0)
    return item


def test_items_are_added_once_and_bad_rows_name_their_line(tmp_path):
    store = Store(tmp_path / "l.sqlite")
    data = write_jsonl(tmp_path / "items.jsonl", _items())
    assert store.add_items(data) == 4 and store.add_items(data) == 0
    assert store.add_items(_items(4)[:1] + [{"prompt": "New.", "responses": ["a", "b"]}]) == 1
    bad = write_jsonl(tmp_path / "bad.jsonl", [_items()[0], {"prompt": "Say x.", "responses": ["x", "x"]}])
    with pytest.raises(DataError, match=r"bad.jsonl:2.*identical"):
        store.add_items(bad)


def test_tokens_are_secret_and_stable(tmp_path):
    store = Store(tmp_path / "l.sqlite")
    token = store.add_labeler("ana")
    assert store.add_labeler("ana") is None  # an existing labeler keeps the token they have
    assert store.labeler_for(token) == "ana" and store.labeler_for("guess") is None and store.labeler_for("") is None
    assert token not in (tmp_path / "l.sqlite").read_bytes().decode("latin-1")  # only its hash is stored
    csrf = store.csrf_token("ana")
    again = Store(tmp_path / "l.sqlite")
    assert again.check_csrf("ana", csrf) and not again.check_csrf("ben", csrf) and not again.check_csrf("ana", None)
    with pytest.raises(ValueError, match="labeler names"):
        store.add_labeler("<script>")


def test_each_item_goes_to_labels_per_item_labelers_and_open_items_come_back(tmp_path):
    store = Store(tmp_path / "l.sqlite", labels_per_item=2)
    store.add_items(_items(3))
    for who in ("ana", "ben", "cai"):
        store.add_labeler(who)
    assert store.next_item("ana").key == "q0" and store.next_item("ben").key == "q0"
    assert store.next_item("cai").key == "q1"  # q0 has its two labelers
    assert store.next_item("ana").key == "q0"  # not submitted: shown again (after a reload or a restart)
    assert Store(tmp_path / "l.sqlite", labels_per_item=2).next_item("ana").key == "q0"
    _label(store, "ana")
    assert store.next_item("ana").key == "q1"  # cai has q1 open: one of its two places is left
    _label(store, "ana"), _label(store, "ben")
    assert store.next_item("ana").key == "q2"
    p = store.progress("ana")
    assert (p["labels"], p["labels_needed"], p["items_complete"], p["mine"]) == (3, 6, 1, 2)


def test_an_abandoned_item_goes_to_someone_else_after_the_lease(tmp_path):
    store = Store(tmp_path / "l.sqlite", lease_s=0)
    store.add_items(_items(2))
    store.add_labeler("ana"), store.add_labeler("ben")
    assert store.next_item("ana").key == "q0"
    assert store.next_item("ben").key == "q0"  # ana's lease ran out
    assert store.next_item("ana").key == "q0"  # and ana still has it open


def test_submissions_are_checked(tmp_path):
    store = Store(tmp_path / "l.sqlite")
    store.add_items(_items(2, k=3))
    store.add_labeler("ana"), store.add_labeler("ben")
    item = store.next_item("ana")
    good = dict(order=[2, 0, 1], likert=[5, 3, 1], flags=[[], ["harmful", "harmful"], []])
    for bad, message in [(dict(order=[0, 0, 1]), "order"), (dict(order=[0, 1]), "order"),
                         (dict(order=[True, 0, 2]), "order"), (dict(likert=[5, 3, 8]), "likert"),
                         (dict(likert=[5, 3]), "likert"), (dict(likert=[5, 3, 2.0]), "likert"),
                         (dict(flags=[[], ["rude"], []]), "flags"), (dict(flags="harmful"), "flags")]:
        with pytest.raises(LabelError, match=message):
            store.submit("ana", item.id, **{**good, **bad})
    with pytest.raises(LabelError, match="not assigned"):
        store.submit("ben", item.id, **good)
    with pytest.raises(LabelError, match="no item"):
        store.submit("ana", 99, **good)
    with pytest.raises(LabelError, match="seconds"):
        store.submit("ana", item.id, **good, seconds=-1)
    store.submit("ana", item.id, **good)
    [lab] = read_labels(tmp_path / "l.sqlite")
    assert lab["ranking"] == [1, 2, 0] and lab["flags"] == [[], ["harmful"], []]  # rank of each response


def test_export_is_what_rm_and_dpo_read_and_a_reward_model_learns_from_it(tmp_path, tiny_model_dir):
    db = tmp_path / "l.sqlite"
    store = Store(db, labels_per_item=2)
    store.add_items([{**row, "terminated": [True, True, False]} for row in _items(8)])
    store.add_labeler("ana"), store.add_labeler("ben")
    for _ in range(8):
        _label(store, "ana", flags=[["made_up"], [], []])
        _label(store, "ben")
    out = export_labels(ExportConfig(db=str(db), out=str(tmp_path / "r.jsonl"), pairs_out=str(tmp_path / "p.jsonl")))
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 16 and rows[0]["labeler"] == "ana" and rows[0]["flags"][0] == ["made_up"]
    records = load_preferences(out)
    assert all(isinstance(r, RankingRecord) for r in records)
    assert records[0].responses == ["cat gold gold.", "cat gold.", "cat."] and records[0].terminated == [True, True, False]
    pairs = load_preferences(tmp_path / "p.jsonl")
    assert len(pairs) == 48 and pairs[0].chosen == "cat gold gold." and pairs[0].rejected == "cat gold."
    assert [(p.chosen, p.rejected) for p in pairs[:3]] == [(p.responses[0], p.responses[1]) for p in as_pairs(records[:1])]
    mean = export_labels(ExportConfig(db=str(db), out=str(tmp_path / "m.jsonl"), combine="mean"))
    assert len(load_preferences(mean)) == 8
    # `rlhfkit label export` then `rlhfkit rm` on it, through the command line
    assert main(["label", "export", "--db", str(db), "--out", str(tmp_path / "cli.jsonl")]) == 0
    assert main(["rm", "--model", tiny_model_dir, "--data", str(tmp_path / "cli.jsonl"), "--out", str(tmp_path / "rm"),
                 "--num_epochs", "3", "--learning_rate", "3e-3", "--per_device_batch_size", "4",
                 "--eval_fraction", "0.25", "--log_every", "1", "--progress", "false", "--normalize_on", "none"]) == 0
    rows = read_metrics(tmp_path / "rm" / "metrics.jsonl")
    losses = [r["loss/reward"] for r in rows if "loss/reward" in r and not r.get("final")]
    assert len(losses) >= 6 and sum(losses[-3:]) < sum(losses[:3])


def test_agreement_counts_pairs_of_labelers_and_responses():
    def lab(item, who, ranking):
        return {"item_id": item, "labeler": who, "ranking": ranking, "likert": [4] * len(ranking),
                "flags": [[] for _ in ranking], "seconds": 2.0}

    labels = [lab(1, "ana", [0, 1, 2]), lab(1, "ben", [0, 2, 1]),  # agree on 2 of 3 pairs
              lab(2, "ana", [1, 0]), lab(2, "ben", [1, 0]), lab(2, "cai", [0, 1]),  # 1 of 3 labeler pairs agree
              lab(3, "ana", [0, 1])]  # one labeler: not shared
    a = agreement(labels)
    assert (a["shared_items"], a["compared_pairs"]) == (2, 6) and a["agreement"] == pytest.approx(3 / 6)
    assert a["per_labeler"] == {"ana": 0.6, "ben": 0.6, "cai": 0.0}
    stats = label_stats(labels)
    assert stats["labelers"]["ana"]["labels"] == 3 and stats["labelers"]["ana"]["median_seconds"] == 2.0
    assert agreement(labels[-1:])["agreement"] is None


def test_stats_command(tmp_path, capsys):
    db = tmp_path / "l.sqlite"
    store = Store(db, labels_per_item=2)
    store.add_items(_items(2))
    store.add_labeler("ana"), store.add_labeler("ben")
    for _ in range(2):
        _label(store, "ana")
        _label(store, "ben", best_first=False)
    assert main(["label", "stats", "--db", str(db), "--out", str(tmp_path / "s.json")]) == 0
    assert "agreement 0.0% over 6 response pairs" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["agreement"] == 0.0
    assert main(["label", "export", "--db", str(tmp_path / "none.sqlite")]) == 1


@pytest.mark.parametrize("argv,message", [
    (["label", "sample", "--k", "1"], "k must be >= 2"),
    (["label", "sample", "--temperature", "0"], "temperature must be positive"),
    (["label", "serve", "--labels_per_item", "0"], "labels_per_item must be >= 1"),
    (["label", "serve", "--port", "70000"], "port must be in 0..65535"),
    (["label", "export", "--combine", "best"], "combine must be one of all, mean"),
    (["label", "ai", "--template", "{instruction} {answer_a}"], "template must contain {answer_b}"),
    (["label", "revise", "--rounds", "0"], "rounds must be >= 1"),
])
def test_bad_label_options_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
