"""Scoring by hand-worked cases; the harness and client against a scripted OpenAI-protocol server."""

import json

import pytest

from pipeline.cli import main
from pipeline.evaluate.client import ChatClient, ChatError
from pipeline.evaluate.evaluators import Item, load_items
from pipeline.evaluate.harness import run_eval
from pipeline.evaluate.needle import make_items
from pipeline.evaluate.scoring import character_error_rate, contains, exact_match, f1_score
from pipeline.render.styles import load_style
from tests.support.openai_server import ScriptedChatServer


@pytest.mark.parametrize("prediction, answers, em, f1", [
    ("Paris", ["paris"], 1.0, 1.0),
    ("It is Paris.", ["Paris"], 0.0, 0.5),            # P = 1/3 ("it", "is", "paris"), R = 1 -> 2*(1/3)/(4/3)
    ("the red big dog", ["big red dog"], 1.0 - 1.0, 1.0),  # articles and order do not matter for F1
    ("42", ["41", "42"], 1.0, 1.0),
    ("", ["x"], 0.0, 0.0),
    ("北京大学", ["北京"], 0.0, 0.6667),                # CJK characters are tokens: P = 2/4, R = 2/2
])
def test_exact_match_and_f1_hand_worked(prediction, answers, em, f1):
    assert exact_match(prediction, answers) == em
    assert f1_score(prediction, answers) == pytest.approx(f1, abs=1e-4)


def test_contains_and_cer():
    assert contains("The magic number is 5,551,234!", ["5551234"]) == 1.0  # punctuation is dropped first
    assert contains("The magic number is 5551235.", ["5551234"]) == 0.0
    assert contains("the number: 5551234.", ["5551234"]) == 1.0
    assert character_error_rate("abc", "abd") == pytest.approx(1 / 3, abs=1e-4)
    assert character_error_rate("a  b\nc", "a b c") == 0.0


def test_harness_report_by_task(tmp_path):
    items = [Item("1", "The capital of France is Paris. " * 20, "Capital?", ["Paris"], "qa", "exact_match"),
             Item("2", "Water boils at 100 degrees. " * 20, "Boiling point?", ["100 degrees"], "qa", "f1"),
             Item("3", "Needle: 777. " * 40, "Number?", ["777"], "niah", "contains")]
    server = ScriptedChatServer([("text", "Paris"), ("text", "100"), ("text", "it is 777")])
    try:
        report = run_eval(items, load_style("best-en"), ChatClient(server.url, "glyph", api_key="k-123"), tmp_path)
    finally:
        server.close()
    # qa: item 1 exact match 1.0; item 2 F1 of "100" vs "100 degrees" = 2*(1*0.5)/1.5 = 0.6667 -> mean 0.8333
    assert report["tasks"]["qa"]["accuracy"] == pytest.approx(0.8333, abs=1e-4)
    assert report["tasks"]["niah"]["accuracy"] == 1.0
    assert report["overall_accuracy"] == pytest.approx((1 + 0.6667 + 1) / 3, abs=1e-3)
    qa = report["tasks"]["qa"]
    assert qa["visual_tokens"] > 0 and qa["compression_ratio"] == round(qa["text_tokens"] / qa["visual_tokens"], 4)
    first = server.requests[0]["body"]["messages"][0]["content"]
    assert first[0]["type"] == "image_url" and first[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert first[-1] == {"type": "text", "text": "Capital?"}, "the question stays text"
    assert server.requests[0]["authorization"] == "Bearer k-123"
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["score"] for line in lines] == [1.0, 0.6667, 1.0]


def test_client_retries_then_fails_clearly():
    server = ScriptedChatServer([("status", 500), ("status", 503), ("text", "ok")])
    try:
        assert ChatClient(server.url, "m", retries=2).chat([{"role": "user", "content": "hi"}])["text"] == "ok"
    finally:
        server.close()
    for script, message in (([("status", 500)], "HTTP 500"), ([("raw", b"not json")], "malformed response"),
                            ([("slow", 2.0)], "failed")):
        server = ScriptedChatServer(script)
        try:
            with pytest.raises(ChatError, match=message):
                ChatClient(server.url, "m", api_key="secret-key", timeout=0.5, retries=1).chat([])
        finally:
            server.close()


def test_needle_items_and_cli(tmp_path, sample_docs):
    haystack = tmp_path / "hay"
    haystack.mkdir()
    (haystack / "a.txt").write_text(sample_docs["milton-areopagitica"])
    assert main(["needle", "--haystack", str(haystack), "--lengths", "2000,8000", "--depths", "0,0.5,1",
                 "--out", str(tmp_path / "niah.jsonl")]) == 0
    items = load_items(tmp_path / "niah.jsonl")
    assert len(items) == 6 and {i.task for i in items} == {"niah-2000", "niah-8000"}
    for item in items:
        assert item.answers[0] in item.context and abs(len(item.context) - int(item.task[5:])) < 200
    middle = [i for i in items if i.id == "niah-8000-0.50"][0]
    position = middle.context.index(middle.answers[0]) / len(middle.context)
    assert 0.4 < position < 0.6
    assert make_items("x. " * 1000, [500], [0.5], seed=3) == make_items("x. " * 1000, [500], [0.5], seed=3)
    with pytest.raises(ValueError, match="depths"):
        make_items("x. " * 1000, [500], [1.5])


def test_bad_items_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no context"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_items(bad)
