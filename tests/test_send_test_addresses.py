"""`send ISSUE --test ADDRESS...` (CONTRACT.md): several addresses after one `--test`, as
well as `--test` repeated, each get a test copy; an address without `--test` is refused."""

from __future__ import annotations

import email
import email.policy

ISSUE = """---
title: Ausgabe
slug: ausgabe
---

Grüße an „alle“!
"""


def _to(path) -> str:  # type: ignore[no-untyped-def]
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return str(message["To"])


def test_several_addresses_after_one_test_each_get_a_copy(cli, make_project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = make_project(issues={"ausgabe.md": ISSUE})
    outbox = tmp_path / "outbox"
    result = cli(
        root, "send", "ausgabe", "--test", "ich@example.org", "kollegin@example.de",
        "--test", "jörg@müller.example", "--outbox", str(outbox),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    copies = sorted(outbox.glob("test-*.eml"))
    assert [p.name for p in copies] == [
        "test-ausgabe-ich@example.org.eml",
        "test-ausgabe-jörg@müller.example.eml",
        "test-ausgabe-kollegin@example.de.eml",
    ]
    assert _to(copies[2]) == "kollegin@example.de"
    assert result.output.count("Test written:") == 3


def test_an_address_without_test_is_refused_and_nothing_is_sent(
    cli, make_project, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    root = make_project(issues={"ausgabe.md": ISSUE})
    outbox = tmp_path / "outbox"
    result = cli(root, "send", "ausgabe", "ich@example.org", "--outbox", str(outbox), "--yes")
    assert result.exit_code == 2
    assert "'ich@example.org': addresses go after --test" in result.output
    assert not outbox.exists()
