"""The labeling page in a real browser: Debian's headless Chromium driven by Playwright.

Skipped where Chromium or Playwright is missing, except in CI (CI=true), where `.ci/run`
installs both and a missing one is a failure. Set RLHFKIT_LABEL_SCREENSHOT=path.png to
save the page as docs/labeling.md shows it.
"""
import importlib.util
import os
import shutil

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RLHFKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
_missing = [m for m in ("playwright", "fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
if not os.path.exists(CHROMIUM):
    _missing.append(CHROMIUM)
if _missing:
    if os.environ.get("CI"):
        pytest.fail(f"CI must install the browser test's needs (missing {_missing}): apt-get install chromium; "
                    "pip install -e '.[label,label-test]'", pytrace=False)
    pytest.skip(f"browser test needs {_missing}", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from rlhfkit.data.loading import load_preferences  # noqa: E402
from rlhfkit.data.records import RankingRecord  # noqa: E402
from rlhfkit.label.export import ExportConfig, export_labels, read_labels  # noqa: E402
from rlhfkit.label.server import background_server  # noqa: E402
from rlhfkit.label.store import Store  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'
ITEMS = [
    {"id": "q0", "prompt": "Write a short poem about the sea.",
     "responses": ["Waves fold grey light\nover the sleeping stones;\nthe tide keeps its counsel.",
                   "The sea is big and wet.", "Sea sea sea sea.", "I cannot write poems about the sea."]},
    {"id": "q1", "prompt": [{"role": "user", "content": "What is 12 plus 7?"}],
     "responses": ["12 plus 7 is 19.", "19", HOSTILE, "It is 21."]},
    {"id": "q2", "prompt": "Name three fruits.", "responses": ["apple, pear, fig", "cat, dog, cow"]},
]


@pytest.fixture
def site(tmp_path):
    store = Store(tmp_path / "labels.sqlite", labels_per_item=2)
    store.add_items(ITEMS)
    tokens = {who: store.add_labeler(who) for who in ("ana", "ben")}
    with background_server(store) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield base, tokens, store, browser
        finally:
            browser.close()


def _open(browser, base, token):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append(f"dialog {d.message}"))
    page.goto(f"{base}/login?token={token}")
    expect(page).to_have_url(f"{base}/label")
    expect(page.locator(".card")).to_have_count(4)
    return page, errors


def _shown(page):
    """Original response indices in the order the page shows them."""
    return [int(x) for x in page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.index)")]


def test_two_labelers_rank_score_flag_and_submit_and_export_reads_back(site, tmp_path):
    base, tokens, store, browser = site
    ana, ana_errors = _open(browser, base, tokens["ana"])
    ben, ben_errors = _open(browser, base, tokens["ben"])  # both at once, on the same first item
    expect(ana.locator("#prompt")).to_have_text(ITEMS[0]["prompt"])
    expect(ben.locator("#prompt")).to_have_text(ITEMS[0]["prompt"])

    # ana with the mouse: rank cards D, B, A, C; a score on each; flag one; submit
    cards = ana.locator(".card")
    shown = _shown(ana)
    for pos, score in zip((3, 1, 0, 2), (2, 6, 5, 3)):
        cards.nth(pos).locator(".rank-btn").click()
        cards.nth(pos).locator(f'.likert button[data-value="{score}"]').click()
    cards.nth(2).locator('input[data-flag="made_up"]').check()
    expect(ana.locator("#ranking li")).to_have_text(["D", "B", "A", "C"])
    expect(cards.nth(3).locator(".rank-badge")).to_have_text("#1")
    chips = ana.locator("#ranking li")
    chips.nth(3).drag_to(chips.nth(0))  # drag C to the front, then back to the end
    expect(chips).to_have_text(["C", "D", "B", "A"])
    chips.nth(0).drag_to(chips.nth(3))
    expect(chips).to_have_text(["D", "B", "A", "C"])
    ana.locator("#undo").click()  # undo the last rank, then rank it again
    expect(ana.locator("#ranking li")).to_have_count(3)
    expect(ana.locator("#submit")).to_be_disabled()
    cards.nth(2).locator(".rank-btn").click()
    ana.locator("#submit").click()
    expect(ana.locator("#prompt")).to_have_text(ITEMS[1]["prompt"][0]["content"])  # the next item
    expect(ana.locator("#progress-text")).to_contain_text("you: 1 labeled")

    # ben with the keyboard only: a 6  c 5  b 4  d 1, Shift+H flags d, Enter submits
    ben_shown = _shown(ben)
    ben.locator("body").press_sequentially("a6c5b4d1")
    ben.keyboard.press("Shift+H")
    expect(ben.locator("#ranking li")).to_have_text(["A", "C", "B", "D"])
    expect(ben.locator('.card[data-letter="D"] input[data-flag="harmful"]')).to_be_checked()
    ben.keyboard.press("Enter")
    expect(ben.locator("#prompt")).to_have_text(ITEMS[1]["prompt"][0]["content"])

    labels = {lab["labeler"]: lab for lab in read_labels(store.path)}
    assert [labels["ana"]["ranking"][shown[p]] for p in (3, 1, 0, 2)] == [0, 1, 2, 3]
    assert [labels["ana"]["likert"][shown[p]] for p in (3, 1, 0, 2)] == [2, 6, 5, 3]
    assert labels["ana"]["flags"][shown[2]] == ["made_up"] and sum(map(len, labels["ana"]["flags"])) == 1
    assert [labels["ben"]["ranking"][ben_shown[p]] for p in (0, 2, 1, 3)] == [0, 1, 2, 3]
    assert [labels["ben"]["likert"][ben_shown[p]] for p in (0, 2, 1, 3)] == [6, 5, 4, 1]
    assert labels["ben"]["flags"][ben_shown[3]] == ["harmful"]

    # a response written as HTML shows as text and runs nothing
    expect(ana.locator(".card .text", has_text="onerror")).to_have_text(HOSTILE)
    assert ana.title() != "pwned" and not ana_errors and not ben_errors

    # nothing advances until the server has the label: a failed submit keeps the answers
    ana.route("**/api/submit", lambda route: route.abort())
    ana.locator("body").press_sequentially("a7b6c5d4")
    ana.keyboard.press("Enter")
    expect(ana.locator("#status")).to_contain_text("Not saved")
    expect(ana.locator("#ranking li")).to_have_count(4)
    ana.unroute("**/api/submit")
    ana.keyboard.press("Enter")
    expect(ana.locator("#prompt")).to_have_text(ITEMS[2]["prompt"])
    assert len(read_labels(store.path)) == 3

    # the progress view
    ana.goto(f"{base}/progress")
    expect(ana.locator("#summary")).to_contain_text("3 of 6 labels")
    expect(ana.locator("#labelers tr")).to_have_count(2)

    out = export_labels(ExportConfig(db=store.path, out=str(tmp_path / "rankings.jsonl")))
    records = load_preferences(out)
    assert len(records) == 3 and all(isinstance(r, RankingRecord) for r in records)
    best_of_ana = ITEMS[0]["responses"][shown[3]]
    assert records[0].responses[0] == best_of_ana  # responses best first, as rlhfkit rm reads them


def test_a_reload_shows_the_same_item_in_the_same_order(site):
    base, tokens, _store, browser = site
    page, errors = _open(browser, base, tokens["ana"])
    shown = _shown(page)
    page.reload()
    expect(page.locator(".card")).to_have_count(4)
    assert _shown(page) == shown and not errors
    if os.environ.get("RLHFKIT_LABEL_SCREENSHOT"):  # mid-item, as docs/labeling.md shows it
        page.locator("body").press_sequentially("b6d5a3")
        page.keyboard.press("Shift+M")
        page.screenshot(path=os.environ["RLHFKIT_LABEL_SCREENSHOT"], full_page=True)
    page.context.clear_cookies()
    page.goto(f"{base}/label")
    expect(page).to_have_url(f"{base}/")  # logged out: back to the start page
