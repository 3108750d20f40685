"""Write newsletter/template_code.json: the Python code Jinja generates for each built-in
email template (templates/*.j2 that the email's environment compiles), for the installed
Jinja, this package's version and the environment's settings (`render.code_stamp`). With it,
a first `build` compiles no template (see `TemplateCodeCache` in newsletter/render.py).
`tests/test_template_code_cache.py` fails when the file is out of date; rerun this after
changing a built-in template, the environment's settings or upgrading Jinja.

    python scripts/template_code.py            # rewrite the file
    python scripts/template_code.py --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from _generated import write_or_check  # (beside this script: scripts/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "newsletter" / "template_code.json"
#: The email's templates (the archive's and the report's have environments of their own).
TEMPLATES = (
    "email.mjml.j2",
    "content.css.j2",
    "responsive.css.j2",
    "masthead.mjml.j2",
    "footer.mjml.j2",
    "email.txt.j2",
    "masthead.txt.j2",
    "footer.txt.j2",
)


def generate() -> str:
    sys.path.insert(0, str(REPO))
    import jinja2

    from newsletter.i18n import install
    from newsletter.project import builtin_templates_dir
    from newsletter.render import ENVIRONMENT_SETTINGS, code_stamp

    folder = builtin_templates_dir()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), **ENVIRONMENT_SETTINGS)
    install(env, "en")  # the language's texts are looked up when rendering, not compiled in
    code = {}
    for name in TEMPLATES:
        source = (folder / name).read_bytes().decode("utf-8")  # as Jinja reads it
        # Jinja's bytecode cache checks a template's source by this hash (Bucket.checksum)
        checksum = hashlib.sha1(source.encode("utf-8")).hexdigest()
        code[f"{name}\n{checksum}"] = env.compile(source, name, raw=True)
    table = {"stamp": code_stamp(ENVIRONMENT_SETTINGS), "code": code}
    return json.dumps(table, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def main() -> None:
    write_or_check(TABLE, generate(), "template_code.py")


if __name__ == "__main__":
    main()
