"""Write newsletter/dates_table.json: what Babel's long date is made of in each language of
the catalogues (newsletter/locale/), for the installed Babel: its long-date pattern as Babel
compiles it (a %-format of the fields) and the wide month names. With it, `format_date`
(newsletter/i18n.py) needs no Babel for those languages; `tests/test_dates_table.py` fails when
the file is out of date and checks it against Babel for every day of 1900-2100. Rerun this
after adding a language or upgrading Babel.

    python scripts/dates_table.py            # rewrite the file
    python scripts/dates_table.py --check    # exit 1 when it is out of date

A language whose pattern uses fields other than d, MMMM and y is left out (Babel formats it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from _generated import write_or_check  # (beside this script: scripts/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "newsletter" / "dates_table.json"
FIELDS = {"d", "MMMM", "y"}


def generate() -> str:
    sys.path.insert(0, str(REPO))
    from babel.dates import get_date_format, get_month_names

    from newsletter.i18n import LANGUAGES
    from newsletter.installed import installed_version

    languages = {}
    for language in LANGUAGES:
        pattern = get_date_format("long", locale=language).format
        if set(re.findall(r"%\((\w+)\)s", pattern)) - FIELDS:
            continue
        months = get_month_names("wide", context="format", locale=language)
        languages[language] = {
            "pattern": pattern.replace("%(d)s", "%(d)d").replace("%(y)s", "%(y)d"),
            "months": [months[number] for number in range(1, 13)],
        }
    table = {"babel": installed_version("babel"), "languages": languages}
    return json.dumps(table, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def main() -> None:
    write_or_check(TABLE, generate(), "dates_table.py")


if __name__ == "__main__":
    main()
