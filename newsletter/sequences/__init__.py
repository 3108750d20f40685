"""Welcome sequences: Markdown emails that go out by themselves after someone subscribes.

- `config`: the `[sequences.<name>]` tables (trigger, tag).
- `clock`: the one place that reads the wall clock; tests and `--now` pass their own.
- step files `sequences/<name>/NN-<title>.md` are an authoring format: `newsletter.step`.
- `state`: enrollments (who is in which sequence, what is next, when) and the step rows.
- `hooks`: the one call each place where people join makes (`enroll_joined`, `enroll_tagged`).
- `delivery`: a step's email for the sending engine: rendered once, recipients by sending's builder.
- `runner`: `run_due` sends every due step exactly once; `BackgroundRunner` for `serve`.
- `precheck`: "nothing to do" from a few plain queries, before SQLAlchemy is even loaded.
- `batches`: the run: the source of due people for `sending.loop`, claimed with their next step.
- `status`: what `sequences status` shows.

A step is sent through the ledger like an issue: each step has an `issues` row (slug
`sequences/<name>/<key>`), so `deliveries` (UNIQUE issue, subscriber) is what makes a step go
to a person at most once, and webhooks, replies and `stats` find the step by that row.
"""
