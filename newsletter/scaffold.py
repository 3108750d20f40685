"""`newsletter init` and `newsletter new`: create files, never overwrite one."""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from newsletter.errors import ConfigError, IssueError, NewsletterError
from newsletter.i18n import N_, gettext_for, texts
from newsletter.issue import one_line_problem, slugify
from newsletter.project import CONFIG_NAME, LANGUAGES

#: What `init` writes until the author puts in their own; `check` warns about them.
PLACEHOLDER_ADDRESS = "Street 1, 12345 City, Country"
PLACEHOLDER_EMAIL = "you@example.com"

CONFIG_TEMPLATE = """\
# The newsletter's settings. Every key is described in newsletter's docs: docs/reference/configuration.md.
[newsletter]
name = {name}
from_email = "{email}"          # a sender verified in SendGrid
from_name = {name}
postal_address = "{address}"   # required by law in every email
# base_url = "https://news.example.com"  # where `newsletter serve` is reachable
# imprint_url = "https://news.example.com/impressum"  # your imprint (Impressum), linked in every
#   footer; REQUIRED before sending in Germany: `check` and `send` refuse a German issue without it
language = "{language}"

[database]
url = "sqlite:///newsletter.db"

[sendgrid]
region = "global"                        # or "eu"

[theme]
brand_color = "#1a56db"
# logo_url = "https://news.example.com/logo.png"

# A welcome sequence: sequences/welcome/*.md go to every new subscriber, one after another.
# Uncomment to enable it, then run `newsletter sequences run` from cron (docs/sequences.md).
# [sequences.welcome]
# trigger = "subscribed"
"""

TEMPLATES_README = """\
# Overriding templates

A file here replaces the built-in template of the same name. Start from a copy of the
built-in one (run `python -c "import newsletter.project as p; print(p.builtin_templates_dir())"`
to find them):

- `email.mjml.j2`: the MJML layout of the HTML part (`{{ content }}` is the issue).
- `footer.mjml.j2`: the footer of the HTML part.
- `content.css.j2`: styles for the issue's content (inlined into every element).
- `responsive.css.j2`: `@media` and dark-mode rules (kept in `<style>`).
- `email.txt.j2`, `footer.txt.j2`: the plain-text part.

Keep the postal address (`{{ newsletter.postal_address }}`) and the unsubscribe link
(`<a href="{{ unsubscribe_url }}">`) in both footers: `newsletter check` reports an error
when either is missing.
"""

#: The sample issue's and the first welcome step's texts (the wording is the catalogue's).
GREETING = N_('Hi {{ subscriber.first_name | default("there") }},')
SAMPLE_TEXTS = {
    "greeting": GREETING,
    "lead": N_(
        "This is where the issue's text goes. **Markdown** works: lists, quotes, "
        "tables and [links](https://example.com)."
    ),
    "heading": N_("A heading"),
    "point": N_("one point"),
    "another_point": N_("another point"),
    "quote": N_("“A quote.”"),
    "goodbye": N_("See you soon!"),
}
SAMPLE_BODY = """\
{greeting}

{lead}

## {heading}

- {point}
- {another_point}

> {quote}

{goodbye}
"""

#: `init`'s first welcome step (sequences/welcome/01-willkommen.md), off until configured.
#: No "just reply" line: the layout adds its reply prompt ([theme] reply_prompt) below.
WELCOME_TEXTS = {
    "title": N_("Welcome!"),
    "preheader": N_("Glad you are here – what to expect"),
    "delay_note": N_("after signing up; 2h, 3d for later steps"),
    "hour_note": N_("not before 9 o'clock ([newsletter] timezone)"),
    "greeting": GREETING,
    "lead": N_("glad you are here! This is what to expect, and how often you will hear from me."),
}
WELCOME_STEP = """\
---
title: {title}
preheader: {preheader}
delay: 0            # {delay_note}
# send_at_hour: 9   # {hour_note}
---

{greeting}

{lead}
"""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _write_beside(path: Path, text: str, finish: Callable[[str, Path], None]) -> None:
    """Write `text` to a temporary file beside `path`, then `finish(tmp, path)` puts it in
    place; the temporary file never outlives the call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        # mkstemp makes the file 0600; give it the mode any new file gets (0644 under the
        # usual umask), so a web server can serve `build` output.
        os.chmod(tmp, 0o666 & ~_umask())
        finish(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):  # gone already after os.replace
            os.unlink(tmp)


def write_new_file(path: Path, text: str) -> None:
    """Write a file atomically, failing if it exists (a hard link cannot clobber)."""
    _write_beside(path, text, os.link)


def write_file_atomic(path: Path, text: str) -> None:
    """Replace a file's content atomically (readers see the old or the new file)."""
    _write_beside(path, text, os.replace)


#: The sample issue's title and preheader (the line inboxes show after the subject): a written
#: one, so the sample passes `check --strict` once the config is filled in.
SAMPLE_TITLE = N_("Welcome")
SAMPLE_PREHEADER = N_("What this issue is about, in one sentence")


def issue_text(
    title: str, language: str, date: datetime.date, slug: str, preheader: str = ""
) -> str:
    # deferred: yaml costs 13 ms at start-up
    import yaml

    front = yaml.safe_dump(
        {"title": title, "preheader": preheader, "date": date, "slug": slug, "language": language},
        allow_unicode=True,
        sort_keys=False,
        width=1000,
    )
    front = front.replace("preheader: ''", "preheader:  # the line inboxes show after the subject")
    return f"---\n{front}---\n\n{SAMPLE_BODY.format_map(texts(language, SAMPLE_TEXTS))}"


def init_project(directory: Path, name: str, language: str) -> tuple[list[Path], list[Path]]:
    """Scaffold a project; return (created, kept) paths. Refuse if a project is already there."""

    if language not in LANGUAGES:
        raise ConfigError(
            f"language {language!r} is not supported; use one of: {', '.join(LANGUAGES)}"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):  # TOML strings cannot hold them
        raise ConfigError("--name must be one line of text, without control characters")
    config = directory / CONFIG_NAME
    if config.exists():
        raise ConfigError(
            f"{config}: a project already exists here; edit it, or pass another folder to `newsletter init`"
        )
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: is a file; give a folder for the new project")
    today = datetime.date.today()
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    first_title = gettext_for(language).gettext(SAMPLE_TITLE)
    files = {
        config: CONFIG_TEMPLATE.format(
            name=quoted, language=language, email=PLACEHOLDER_EMAIL, address=PLACEHOLDER_ADDRESS
        ),
        directory / "issues" / f"{today.isoformat()}-{slugify(first_title)}.md": issue_text(
            first_title,
            language,
            today,
            slugify(first_title),
            gettext_for(language).gettext(SAMPLE_PREHEADER),
        ),
        directory / "templates" / "README.md": TEMPLATES_README,
        directory / "sequences" / "welcome" / "01-willkommen.md": WELCOME_STEP.format_map(
            texts(language, WELCOME_TEXTS)
        ),
    }
    created, kept = [], []
    for path, text in files.items():
        try:
            write_new_file(path, text)
        except FileExistsError:
            kept.append(path)
            continue
        except OSError as exc:
            raise NewsletterError(
                f"{path}: cannot write ({exc.strerror}); check the folder's permissions"
            ) from None
        created.append(path)
    return created, kept


def new_issue(
    issues_dir: Path, title: str, language: str, date: datetime.date | None = None
) -> Path:
    """Create `issues/<date>-<slug>.md`; never overwrite. A title `build` would refuse
    (`one_line_problem`) is refused before anything is written."""
    date = date or datetime.date.today()
    if problem := one_line_problem("title", title):
        raise NewsletterError(problem)
    slug = slugify(title)
    if not slug:
        raise IssueError(
            issues_dir,
            None,
            f"title {title!r} has no letters or digits for a file name; use another title",
        )
    path = issues_dir / f"{date.isoformat()}-{slug}.md"
    if issues_dir.exists() and not issues_dir.is_dir():
        raise IssueError(issues_dir, None, "is not a folder; rename it so issues can go in issues/")
    try:
        write_new_file(path, issue_text(title.strip(), language, date, slug))
    except FileExistsError:
        raise IssueError(path, None, "already exists; edit it, or choose another title") from None
    except OSError as exc:
        raise IssueError(
            path, None, f"cannot write ({exc.strerror}); check the folder's permissions"
        ) from None
    return path
