"""The `[sequences.<name>]` tables of newsletter.toml: when a sequence starts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from newsletter.project import Project

SUBSCRIBED = "subscribed"
TAGGED_PREFIX = "tagged:"
#: The trigger of a sequence that starts when a reader first replies to any email.
REPLIED = "replied"
NAME_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


@dataclass(frozen=True)
class SequenceConfig:
    """One configured sequence: `trigger = "subscribed"` (optionally with `tag`) or
    `trigger = "tagged:<tag>"`."""

    name: str
    trigger: str
    tag: str | None

    @property
    def on_subscribe(self) -> bool:
        return self.trigger == SUBSCRIBED

    @property
    def on_reply(self) -> bool:
        return self.trigger == REPLIED

    @property
    def trigger_tag(self) -> str | None:
        """The tag whose adding starts the sequence (trigger "tagged:<tag>"), else None."""
        if self.trigger.startswith(TAGGED_PREFIX):
            return self.trigger[len(TAGGED_PREFIX) :]
        return None

    def describe(self) -> str:
        if self.on_subscribe:
            return "on subscribe" + (f" (tag {self.tag})" if self.tag else "")
        if self.on_reply:
            return "when they reply" + (f" (tag {self.tag})" if self.tag else "")
        return f"when tagged {self.trigger_tag}"


def check_sequence_table(name: str, values: dict[str, Any]) -> str | None:
    """Why a `[sequences.<name>]` table is unusable (for ConfigError), or None."""
    if not NAME_RE.match(name):
        return (
            f"{name!r} is not a usable sequence name; use lowercase letters, digits and "
            "hyphens, the same as its folder in sequences/"
        )
    trigger = values["trigger"]
    if trigger in (SUBSCRIBED, REPLIED):
        if values["tag"] is not None and not values["tag"].strip():
            return 'tag is empty; remove it or give a tag, e.g. tag = "kunden"'
        return None
    if trigger.startswith(TAGGED_PREFIX):
        if not trigger[len(TAGGED_PREFIX) :].strip():
            return 'trigger "tagged:" needs a tag, e.g. trigger = "tagged:kunden"'
        if values["tag"] is not None:
            return 'tag goes with trigger = "subscribed"; with "tagged:<tag>" the tag is in the trigger'
        return None
    return f'unknown trigger {trigger!r}; use "subscribed", "replied" or "tagged:<tag>"'


def configured(project: Project) -> list[SequenceConfig]:
    """The sequences newsletter.toml enables, by name."""
    tables = project.config.sections.get("sequences") or {}
    return [
        SequenceConfig(
            name=name,
            trigger=table["trigger"],
            tag=table["tag"].strip() if table["tag"] else None,
        )
        for name, table in sorted(tables.items())
    ]


def get_sequence(project: Project, name: str) -> SequenceConfig:
    for sequence in configured(project):
        if sequence.name == name:
            return sequence
    raise ConfigError(
        f"{project.config.path}: no [sequences.{name}] table; add one with "
        'trigger = "subscribed" to enable the sequence'
    )
