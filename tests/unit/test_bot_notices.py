"""The evidence of AICC-PRIV-01: every voice bot tells callers first that an AI speaks and that the call
is recorded, in each of its languages."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from aicc.appliance.bots.notices import main


def site_bot(folder: Path, **changes: object) -> None:
    """The shipped retail bot, changed, as a site's own definition that replaces it."""
    text = (resources.files("aicc.appliance.bots.definitions") / "retail.yml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    doc.update(changes)
    (folder / "retail.yml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


def test_the_shipped_bots_say_both_in_every_language(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "人工智能" in out and "录音" in out and "AI assistant" in out and "problems: none" in out


def test_a_site_bot_with_the_notice_off_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site_bot(tmp_path, notice=False)
    assert main([str(tmp_path)]) == 1
    assert "retail: notice OFF" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("texts", "missing"),
    [
        (
            {
                "en": "This call is recorded for quality purposes.",
                "zh": "您正在与人工智能助手通话，本次通话将被录音。",
            },
            "(en): the notice does not say that an AI speaks",
        ),
        (
            {"en": "You are talking to an AI. This call is recorded.", "zh": "欢迎致电。"},
            "(zh): the notice does not say that an AI speaks nor that the call is recorded",
        ),
        (
            {
                "en": "Hi, I'm the shop's bot; we record calls.",
                "zh": "您好，我是智能客服，本次通话将被录制。",
            },
            None,
        ),
    ],
)
def test_a_site_notice_must_name_the_ai_and_the_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], texts: dict[str, str], missing: str | None
) -> None:
    site_bot(tmp_path, prompts={"notice": texts})
    code = main([str(tmp_path)])
    out = capsys.readouterr().out
    assert texts["en"] in out and texts["zh"] in out  # the assessor reads what callers hear
    if missing is None:
        assert code == 0, out
    else:
        assert code == 1 and missing in out, out


def test_a_broken_site_definition_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "retail.yml").write_text("name: retail\nnotice: [\n", encoding="utf-8")
    assert main([str(tmp_path)]) == 2
    assert "retail.yml" in capsys.readouterr().out
