"""The labeling server over HTTP: who gets in, what gets written, and that a server
killed with kill -9 loses no acknowledged label and gives each labeler back their item."""
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest

_missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
if _missing:
    if os.environ.get("CI"):
        pytest.fail(f"CI must install the label extra (missing {_missing}): pip install -e '.[label]'", pytrace=False)
    pytest.skip(f"the label extra is not installed ({_missing})", allow_module_level=True)

from rlhfkit.label.export import read_labels  # noqa: E402
from rlhfkit.label.server import ServeConfig, background_server, serve  # noqa: E402
from rlhfkit.label.store import Store  # noqa: E402

WORDS = ["cat", "dog", "red", "fig", "owl", "pear", "lime", "bee", "yak", "elk"]


def _items(n):
    return [{"id": f"q{i}", "prompt": f"Say {w} {i}.", "responses": [f"{w} {i}!", f"{w} {i}.", f"no {w} {i}"]}
            for i, w in enumerate(WORDS * (n // len(WORDS) + 1)) if i < n]


class Client:
    """A labeler's HTTP client with a bearer token (or none) on one keep-alive connection."""

    def __init__(self, base, token=None):
        u = urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        self.token = token

    def call(self, method, path, body=None, headers=None, **kwargs):
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body, h["Content-Type"] = json.dumps(body).encode(), "application/json"
        self.conn.request(method, path, body=body, headers=h, **kwargs)
        r = self.conn.getresponse()
        data = r.read()
        try:
            data = json.loads(data)
        except ValueError:
            pass
        return r.status, data, r

    def next(self):
        status, data, _ = self.call("GET", "/api/next")
        assert status == 200, data
        return data

    def submit(self, nxt, order=None, **headers):
        k = len(nxt["item"]["responses"])
        body = {"item_id": nxt["item"]["id"], "order": order or list(range(k)), "likert": [4] * k,
                "flags": [[] for _ in range(k)], "seconds": 1.0}
        return self.call("POST", "/api/submit", body, {"X-CSRF-Token": nxt["csrf"], **headers})


@pytest.fixture
def app(tmp_path):
    store = Store(tmp_path / "l.sqlite", labels_per_item=2)
    store.add_items(_items(4))
    tokens = {who: store.add_labeler(who) for who in ("ana", "ben")}
    with background_server(store) as base:
        yield base, tokens, store


def test_nobody_gets_in_without_a_token(app):
    base, tokens, _ = app
    anon = Client(base)
    assert anon.call("GET", "/api/next")[0] == 401
    assert Client(base, "not-a-token").call("GET", "/api/next")[0] == 401
    assert anon.call("POST", "/api/submit", {"item_id": 1})[0] == 401
    assert anon.call("GET", "/label")[2].getheader("location") == "/"
    assert anon.call("GET", "/login?token=guess")[0] == 403
    status, _, r = anon.call("GET", f"/login?token={tokens['ana']}")
    assert status == 303 and r.getheader("location") == "/label"
    cookie = r.getheader("set-cookie")
    assert f"rlhfkit_label={tokens['ana']}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    status, data, _ = anon.call("GET", "/api/next", headers={"Cookie": cookie.split(";")[0]})
    assert status == 200 and data["labeler"] == "ana"
    for path in ("/static/../store.py", "/static/store.py", "/docs", "/openapi.json"):
        assert anon.call("GET", path)[0] == 404


def test_every_write_needs_the_csrf_token_a_same_origin_and_a_small_body(app):
    base, tokens, store = app
    ana = Client(base, tokens["ana"])
    nxt = ana.next()
    assert ana.submit(nxt, **{"X-CSRF-Token": ""})[0] == 403
    assert ana.submit(nxt, **{"X-CSRF-Token": store.csrf_token("ben")})[0] == 403
    assert ana.submit(nxt, Origin="http://evil.example")[0] == 403
    assert ana.submit(nxt, **{"Sec-Fetch-Site": "cross-site"})[0] == 403
    csrf = {"X-CSRF-Token": nxt["csrf"], "Content-Type": "application/json"}
    assert ana.call("POST", "/api/submit", b"{" + b" " * 70_000 + b"}", csrf)[0] == 413
    chunks = (b" " * 8192 for _ in range(10))  # no content-length: counted as it arrives
    assert ana.call("POST", "/api/submit", chunks, {**csrf, "Transfer-Encoding": "chunked"}, encode_chunked=True)[0] == 413
    assert ana.call("POST", "/api/submit", b"not json", csrf)[0] == 400
    status, data, _ = ana.submit(nxt, order=[0, 0, 1])
    assert status == 400 and "order" in data["error"]
    assert read_labels(store.path) == []
    host = urlsplit(base).netloc
    status, data, r = ana.submit(nxt, Origin=f"http://{host}")
    assert status == 200 and data["progress"]["mine"] == 1
    assert "script-src 'self'" in r.getheader("content-security-policy") and r.getheader("x-frame-options") == "DENY"
    assert len(read_labels(store.path)) == 1


def test_responses_are_shuffled_per_labeler_and_mapped_back(app):
    base, tokens, store = app
    ana, ben = Client(base, tokens["ana"]), Client(base, tokens["ben"])
    seen = {}
    for who, client in (("ana", ana), ("ben", ben)):
        nxt = client.next()
        shown = [r["index"] for r in nxt["item"]["responses"]]
        assert sorted(shown) == [0, 1, 2] and client.next()["item"]["responses"] == nxt["item"]["responses"]
        assert client.submit(nxt, order=shown)[0] == 200  # ranked in the order shown
        seen[who] = shown
    labels = {lab["labeler"]: lab["ranking"] for lab in read_labels(store.path)}
    for who, shown in seen.items():
        assert [labels[who][i] for i in shown] == [0, 1, 2]


def _label(item_id, **changes):
    return json.dumps({"item_id": item_id, "order": [0, 1, 2], "likert": [4, 4, 4], "flags": [[], [], []],
                       **changes}).encode()


HOSTILE_BODIES = [  # (body under the size limit, text of the 400's error); "q0": the first item's id
    (_label(10 ** 30), "no item 1000000000000000000000000000000"),
    (_label(-(10 ** 30)), "no item -1000000000000000000000000000000"),
    (b'{"item_id": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "JSON nested too deeply"),
    (b"[" * 32_000 + b"]" * 32_000, "JSON nested too deeply"),
    (b'{"item_id": 1' + b"0" * 5000 + b"}", "integer string conversion"),
    (_label("q0", flags=[[["instruction"]], [], []]), "flags: expected 3 lists of"),
    (_label("q0", flags=[[{"a": 1}], [], []]), "flags: expected 3 lists of"),
    (_label("q0", order=[10 ** 30, 0, 1]), "order: expected every response index"),
    (_label("q0", likert=[1e308, 4, 4]), "likert: expected 3 integers"),
    (_label("q0", seconds=10 ** 30), "seconds: expected a non-negative number"),
    (_label(1.5), "item_id: no item 1.5"),
    (_label(True), "item_id: no item True"),
    (b'{"item_id": NaN}', "item_id: no item nan"),
    (b"\x92{}", "codec can't decode"),
    (b'"just a string"', "expected an object"),
    (b"", "Expecting value"),
]


@pytest.mark.parametrize("body,message", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_no_body_under_the_limit_is_a_server_error(app, body, message):
    base, tokens, store = app
    ana = Client(base, tokens["ana"])
    nxt = ana.next()
    assert len(body) < 65536
    status, data, _ = ana.call("POST", "/api/submit", body, {"X-CSRF-Token": nxt["csrf"],
                                                              "Content-Type": "application/json"})
    assert status == 400 and message in data["error"], (status, data)
    assert ana.next()["item"]["id"] == nxt["item"]["id"] and read_labels(store.path) == []  # nothing written


def test_a_csrf_header_with_non_ascii_bytes_is_refused_not_a_server_error(app):
    base, tokens, _ = app
    ana = Client(base, tokens["ana"])
    nxt = ana.next()
    status, data, _ = ana.call("POST", "/api/submit", _label(nxt["item"]["id"]),
                               {"X-CSRF-Token": "caf\xe9".encode("latin-1"), "Content-Type": "application/json"})
    assert status == 403 and "CSRF" in data["error"]


def test_serve_binds_loopback_unless_told(tmp_path):
    with pytest.raises(ValueError, match="allow_remote"):
        serve(ServeConfig(db=str(tmp_path / "l.sqlite"), host="0.0.0.0"))
    assert not (tmp_path / "l.sqlite").exists()
    assert ServeConfig().host == "127.0.0.1"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(db, port, tmp_path, *args):
    log = open(tmp_path / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "rlhfkit.label.server", "--db", str(db), "--port", str(port),
                             "--labels_per_item", "1", *args], stdout=log, stderr=log)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.mark.kill
def test_kill_9_loses_no_acknowledged_label_and_each_labeler_resumes(tmp_path):
    db = tmp_path / "l.sqlite"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _items(400)))
    proc = _start(db, port, tmp_path, "--data", str(data), "--labelers", "ana,ben,cai")
    links = tmp_path / "l.sqlite.tokens"  # the login links, readable by their owner only
    assert links.stat().st_mode & 0o777 == 0o600
    tokens = dict(line.split("\t") for line in links.read_text().splitlines())
    assert all(url.startswith(f"{base}/login?token=") for url in tokens.values())
    tokens = {who: url.split("token=")[1] for who, url in tokens.items()}
    acked = {who: [] for who in tokens}  # item ids whose submission got a 200
    opened = {}  # labeler -> the last item the server gave them
    stop = threading.Event()

    def label(who):
        client = Client(base, tokens[who])
        try:
            while not stop.is_set():
                nxt = client.next()
                opened[who] = nxt["item"]["id"]
                if len(acked[who]) >= 5 and who == "cai":  # cai stops mid-item: opened, never submitted
                    return
                status, data, _ = client.submit(nxt)
                assert status == 200, data
                acked[who].append(nxt["item"]["id"])
        except (OSError, http.client.HTTPException):
            pass  # the server died under us

    threads = [threading.Thread(target=label, args=(who,)) for who in tokens]
    for t in threads:
        t.start()
    while sum(map(len, acked.values())) < 40:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: ana and ben are submitting as fast as they can
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    stored = {(lab["labeler"], lab["item"]) for lab in read_labels(db)}  # the items file's ids, as the API's
    for who, items in acked.items():
        assert {(who, i) for i in items} <= stored, f"{who} lost an acknowledged label"
    proc = _start(db, port, tmp_path, "--data", str(data), "--labelers", "ana,ben,cai")  # adds nothing new
    try:
        for who in tokens:
            resumed = Client(base, tokens[who]).next()["item"]["id"]
            if (who, opened[who]) in stored:  # committed, though the reply never arrived
                assert resumed not in {i for w, i in stored if w == who}
            else:
                assert resumed == opened[who], who
    finally:
        proc.kill()
        proc.wait()
    assert len(links.read_text().splitlines()) == 3 and len(Store(db).progress()["labelers"]) == 3


def test_api_item_ids_are_the_items_files_ids(app):
    base, tokens, store = app
    ana = Client(base, tokens["ana"])
    seen = []
    for _ in range(4):
        nxt = ana.next()
        seen.append(nxt["item"]["id"])
        status, data, _ = ana.submit(nxt)
        assert status == 200, data
    assert seen == ["q0", "q1", "q2", "q3"]  # _items' own "id" column
    assert ana.next()["item"] is None
    labels = read_labels(store.path)
    assert [lab["item"] for lab in labels if lab["labeler"] == "ana"] == seen
    ben = Client(base, tokens["ben"])
    nxt = ben.next()
    status, data, _ = ben.call("POST", "/api/submit", {"item_id": "nope", "order": [0, 1, 2], "likert": [4] * 3,
                                                       "flags": [[], [], []]}, {"X-CSRF-Token": nxt["csrf"]})
    assert status == 400 and "no item 'nope'" in data["error"]


def test_curl_as_documented(app, tmp_path):
    """The curl session in docs/labeling.md, run as written against a live server."""
    import re
    import shutil
    from pathlib import Path

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    base, tokens, store = app
    doc = (Path(__file__).resolve().parents[1] / "docs" / "labeling.md").read_text(encoding="utf-8")
    script = re.search(r"test_curl_as_documented runs the block below -->\n```bash\n(.*?)```", doc, re.S).group(1)
    script = re.sub(r"^BASE=.*$", f"BASE={base}", script, flags=re.M)
    script = re.sub(r"^TOKEN=.*$", f"TOKEN={tokens['ana']}", script, flags=re.M)
    shell = f'python() {{ "{sys.executable}" "$@"; }}\nset -e\n{script}'
    done = subprocess.run(["bash", "-c", shell], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    submitted, progress = map(json.loads, done.stdout.strip().splitlines()[-2:])
    assert submitted["ok"] is True
    assert progress["labels"] == 1 and progress["labelers"] == {"ana": 1, "ben": 0}
    (label,) = read_labels(store.path)
    assert label["item"] == "q0" and label["ranking"] == [1, 0, 2] and label["likert"] == [5, 6, 2]
    assert label["flags"] == [[], [], ["made_up"]] and label["seconds"] == 30
