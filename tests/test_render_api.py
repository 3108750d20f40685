"""The public rendering API others build on: render once, personalize per recipient."""

from __future__ import annotations

from pathlib import Path

from newsletter.project import Project
from newsletter.render import SAMPLE_SUBSCRIBER, apply_substitutions, render_file
from tests.conftest import EXAMPLE_ISSUE


def test_substitutions_give_exactly_personalize(project: Path) -> None:
    rendered = render_file(Project.load(project), project / "issues" / EXAMPLE_ISSUE.name)
    person = {**SAMPLE_SUBSCRIBER, "first_name": '<b>Tom & "Jerry"</b>'}
    url = "https://news.example.com/unsubscribe/abc?x=1&y=2"
    subs = rendered.substitutions(person, url)
    html, text = rendered.personalize(person, url)
    assert (apply_substitutions(rendered.html, subs), apply_substitutions(rendered.text, subs)) == (
        html,
        text,
    )
    # Plain string replacement, as SendGrid does it, gives the same result.
    plain_html, plain_text = rendered.html, rendered.text
    for key, value in subs.items():
        plain_html = plain_html.replace(key, value)
        plain_text = plain_text.replace(key, value)
    assert (plain_html, plain_text) == (html, text)
    assert "Hallo &lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;," in html
    assert 'Hallo <b>Tom & "Jerry"</b>,' in text
    assert 'href="https://news.example.com/unsubscribe/abc?x=1&amp;y=2"' in html
    assert url in text
    assert all(len(v.encode()) < 10_000 for v in subs.values())
