"""The `[sequences.<name>]` tables of newsletter.toml: when a sequence starts. (Their keys
are checked where the rest of newsletter.toml is, in `newsletter.project`.)"""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.errors import ConfigError
from newsletter.project import REPLIED, SUBSCRIBED, TAGGED_PREFIX, Project


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
