"""The DAGs' failure and retry callbacks, against a real HTTP receiver on 127.0.0.1."""

from types import SimpleNamespace

import pytest

from pipeline.orchestration import alerts
from tests.support.webhook import WebhookReceiver


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


def task_context(error=RuntimeError("training.pretrain exited with 1:\nOSError: no model at /x")):
    ti = SimpleNamespace(dag_id="glyph_train", task_id="pretrain", run_id="manual__1", try_number=2, max_tries=2)
    return {"ti": ti, "exception": error}


def test_failure_posts_one_clear_line(receiver, monkeypatch, capsys):
    monkeypatch.setenv("GLYPH_ALERT_WEBHOOK", receiver.url)
    alerts.task_failed(task_context())
    [body] = receiver.bodies
    assert body["text"] == ("glyph: glyph_train.pretrain failed (try 2 of 3) in manual__1: "
                            "RuntimeError: training.pretrain exited with 1: OSError: no model at /x"), \
        "the one line ends with the job's own reason, not an empty colon"
    assert body["event"] == "failed" and body["error"].endswith("OSError: no model at /x")
    assert body["text"] in capsys.readouterr().out


def test_run_failure_without_a_task(receiver, monkeypatch):
    monkeypatch.setenv("GLYPH_ALERT_WEBHOOK", receiver.url)
    alerts.run_failed({"dag_run": SimpleNamespace(dag_id="glyph_render", run_id="r1"), "reason": "task_failure"})
    alerts.run_failed({**task_context(), "reason": "task_failure"})
    assert [body["text"] for body in receiver.bodies] == [
        "glyph: glyph_render run failed in r1: task_failure",
        "glyph: glyph_train run failed (task pretrain) in manual__1: RuntimeError: training.pretrain exited with 1: "
        "OSError: no model at /x"]


@pytest.mark.parametrize("target", ["unreachable", "error500"])
def test_an_alert_that_cannot_be_sent_never_raises(target, monkeypatch, capsys, caplog):
    server = WebhookReceiver(status=500)
    url = server.url
    if target == "unreachable":
        server.close()
    monkeypatch.setenv("GLYPH_ALERT_WEBHOOK", url)
    alerts.task_retrying(task_context())
    assert "glyph: glyph_train.pretrain up for retry" in capsys.readouterr().out
    assert "could not send the up for retry alert" in caplog.text
    if target == "error500":
        assert len(server.bodies) == 1
        server.close()
