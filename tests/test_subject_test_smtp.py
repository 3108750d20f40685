"""A subject-line test over SMTP can be decided by replies, not by clicks or opens: only
SendGrid reports those (its Event Webhook), so over SMTP every test would end "A wins within
noise". The refusal comes before anything is sent."""

from __future__ import annotations

import pytest

from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.smtp_server import FakeSmtp


@pytest.fixture
def smtp_project(make_project):  # type: ignore[no-untyped-def]
    with FakeSmtp() as smtp:
        root = make_project(
            CONFIG
            + f'\n[sending]\ntransport = "smtp"\n\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}'
            + '\nsecurity = "none"\n\n[tracking]\nclicks = true\nopens = true\n'
        )
        (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
        yield root, smtp


@pytest.mark.parametrize("metric", ["clicks", "opens"])
def test_clicks_and_opens_are_refused_over_smtp(smtp_project, cli, metric) -> None:  # type: ignore[no-untyped-def]
    root, smtp = smtp_project
    for n in range(6):
        assert cli(root, "subscribers", "add", f"leser{n}@example.de").exit_code == 0
    result = cli(
        root, "send", EXAMPLE_ISSUE.stem, "--subject-b", "Was Meta mit Creatorn vorhat",
        "--sample", "50%", "--by", metric, "--yes",
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"--by {metric} cannot be measured over smtp: only SendGrid reports {metric}" in (
        result.output
    )
    assert "use --by replies" in result.output
    assert smtp.messages == []


@pytest.mark.parametrize(
    ("by", "said"),
    [(["--by", "replies"], "decided by replies"), ([], "decided by replies after 4h")],
    ids=["--by replies", "without --by"],
)
def test_replies_decide_a_test_over_smtp(smtp_project, cli, by, said) -> None:  # type: ignore[no-untyped-def]
    """Over SMTP only replies can be measured: `--by replies`, and the default without --by."""
    root, smtp = smtp_project
    for n in range(6):
        assert cli(root, "subscribers", "add", f"leser{n}@example.de").exit_code == 0
    result = cli(
        root, "send", EXAMPLE_ISSUE.stem, "--subject-b", "Was Meta mit Creatorn vorhat",
        "--sample", "50%", *by, "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert said in result.output
    assert len(smtp.messages) == 3
