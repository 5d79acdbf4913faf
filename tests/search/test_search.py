"""The search loop end to end with the real offline evaluator, resume after kill -9, and the critic path."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from pipeline.evaluate.client import ChatClient
from pipeline.evaluate.evaluators import OfflineEvaluator, load_items
from pipeline.render.config import load_render_config
from pipeline.search.critic import LLMCritic, parse_proposals
from pipeline.search.genetic import GeneticSearch, SearchSettings
from pipeline.search.space import BEST_EN, GENES, key, repair, to_config
from tests.support.openai_server import ScriptedChatServer


@pytest.fixture(scope="module")
def validation(tmp_path_factory, sample_docs):
    path = tmp_path_factory.mktemp("val") / "val.jsonl"
    with path.open("w") as handle:
        handle.write(json.dumps({"id": "m", "context": sample_docs["milton-areopagitica"][5000:5500],
                                 "question": "?", "answers": ["x"]}) + "\n")
    return path


def run_search(out, validation, critic=None, **settings):
    items = load_items(validation)
    return GeneticSearch(SearchSettings(**settings), OfflineEvaluator(max_pages_per_item=1), items, str(out),
                         critic=critic).run()


def test_search_end_to_end(tmp_path, validation):
    result = run_search(tmp_path, validation, population=4, generations=3, seed=1)
    state = json.loads((tmp_path / "search_state.json").read_text())
    assert result["evaluator"].startswith("offline-ocr") and state["done"]
    assert result["evaluations"] == len(state["evaluations"]) >= 4
    best = result["best"]
    assert best["fitness"] == max(e["fitness"] for e in state["evaluations"].values())
    assert 0 < best["accuracy"] <= 1 and best["compression_ratio"] > 0
    assert [h["generation"] for h in state["history"]] == [0, 1, 2]
    assert all(h["best_fitness"] <= n["best_fitness"] for h, n in zip(state["history"], state["history"][1:])), \
        "elitism: the best never gets worse"
    cfg = load_render_config(tmp_path / "best_config.json")  # Glyph-format JSON, loads as any config
    assert cfg == to_config(best["genes"]).replace(font_path=cfg.font_path, fallback_fonts=cfg.fallback_fonts)
    assert Image.open(tmp_path / "search.png").size[0] > 100
    again = run_search(tmp_path, validation, population=4, generations=3, seed=1)
    assert again["evaluated_this_run"] == 0 and again["best"] == best, "a finished search is not redone"


def test_resume_after_kill_evaluates_nothing_twice(tmp_path, validation):
    command = [sys.executable, "-m", "pipeline.cli", "search", "--validation", str(validation),
               "--population", "4", "--generations", "3", "--seed", "2", "--pages-per-item", "1"]
    run = subprocess.Popen(command + ["--out", str(tmp_path / "killed")], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / "killed" / "search_state.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state_file.exists() and len(json.loads(state_file.read_text() or "{}").get("evaluations", {})) >= 3:
            break
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    before = set(json.loads(state_file.read_text())["evaluations"])
    assert 3 <= len(before)
    resumed = subprocess.run(command + ["--out", str(tmp_path / "killed")], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads(resumed.stdout)
    after = json.loads(state_file.read_text())
    assert set(after["evaluations"]) >= before
    assert result["evaluated_this_run"] == len(after["evaluations"]) - len(before), "nothing evaluated twice"
    clean = subprocess.run(command + ["--out", str(tmp_path / "clean")], capture_output=True, text=True,
                           timeout=300)
    assert json.loads(clean.stdout)["best"] == result["best"], "a resumed search makes the same choices"


def test_repair_and_parse():
    fixed = repair({"dpi": 999, "alignment": "justify", "font_size": 13, "bogus": 1, "margin_x": "12"}, BEST_EN)
    assert fixed["dpi"] == GENES["dpi"][2] and fixed["alignment"] == "JUSTIFY"
    assert fixed["font_size"] == BEST_EN["font_size"], "a value outside the choices keeps the fallback's"
    assert fixed["margin_x"] == 12 and "bogus" not in fixed
    assert repair("not a dict", BEST_EN) is None
    assert parse_proposals('{"candidates": [{"dpi": 80}]}') == [{"dpi": 80}]
    assert parse_proposals("Here: [1, 2") == []


def test_critic_proposals_are_used_and_garbage_falls_back(tmp_path, validation):
    proposal = {**BEST_EN, "dpi": 300, "font_size": 10, "alignment": "JUSTIFY"}  # dpi gets clamped to 150
    server = ScriptedChatServer([
        ("text", "Try these:\n```json\n" + json.dumps([proposal, {"dpi": "abc"}, "nonsense"]) + "\n```"),
        ("raw", b"<html>not json</html>"),
        ("slow", 3.0),
        ("status", 500),
    ])
    critic = LLMCritic(ChatClient(server.url, "critic", timeout=1.0, retries=0))
    try:
        run_search(tmp_path, validation, critic=critic, population=4, generations=4, seed=3, patience=10)
    finally:
        server.close()
    state = json.loads((tmp_path / "search_state.json").read_text())
    clamped = {**proposal, "dpi": GENES["dpi"][2]}
    assert key(clamped) in state["evaluations"], "the repaired proposal was evaluated"
    assert state["evaluations"][key(clamped)]["generation"] == 1
    assert len(server.requests) == 3, "asked once per new generation"
    assert "Genes and their allowed values" in server.requests[0]["body"]["messages"][0]["content"]
    assert [h["evaluated"] for h in state["history"]] == [4, 4, 4, 4], "garbage answers: mutation fills in"


def test_cli_saves_a_glyph_config_with_its_scores(tmp_path, validation, caplog):
    from pipeline.cli import main

    target = tmp_path / "searched-test.json"
    assert main(["search", "--validation", str(validation), "--out", str(tmp_path / "s"), "--population", "2",
                 "--generations", "1", "--pages-per-item", "1", "--save-config", str(target)]) == 0
    saved = json.loads(target.read_text())
    assert saved["x-search"]["evaluator"].startswith("offline-ocr") and saved["style"] == "searched-test"
    with caplog.at_level("WARNING"):
        cfg = load_render_config(target)
    assert "unknown key" not in caplog.text and cfg.style == "searched-test"
