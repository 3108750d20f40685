"""Build hook: compile the wording catalogues into the `.mo` files gettext reads.

Runs for the wheel and for editable installs (`pip install -e .`): every
`newsletter/locale/<language>/LC_MESSAGES/newsletter.po` gets its `newsletter.mo` beside it,
as `pybabel compile` would write it (fuzzy entries left out). The `.mo` files are not in git
(they are built), so `[tool.hatch.build] artifacts` puts them into the wheel all the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CompileCatalogues(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        for po in sorted(Path(self.root, "newsletter", "locale").glob("*/LC_MESSAGES/*.po")):
            with po.open("rb") as handle:
                catalog = read_po(handle, locale=po.parent.parent.name, domain=po.stem)
            with po.with_suffix(".mo").open("wb") as handle:
                write_mo(handle, catalog)
