"""`uvicorn newsletter.web.asgi:app` or `gunicorn -k uvicorn.workers.UvicornWorker newsletter.web.asgi:app`.

The project folder comes from NEWSLETTER_PROJECT (else the current folder or a parent).
Variables the environment does not set come from ~/.config/newsletter/env, as for every
`newsletter` command.
"""

from __future__ import annotations

import os
from pathlib import Path

from newsletter import tokens
from newsletter.project import Project
from newsletter.secrets_file import load_secrets
from newsletter.web import create_app

load_secrets()
tokens.secret_key(required=True)  # refuse to start without it, before taking traffic
_folder = os.environ.get("NEWSLETTER_PROJECT")
app = create_app(Project.find(explicit=Path(_folder) if _folder else None))
