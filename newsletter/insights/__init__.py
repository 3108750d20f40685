"""How the newsletter is doing: `newsletter stats` and `newsletter report`, in one package.

- `counters`: the counters, written as events arrive (and the list-growth triggers); the only
  writer of `issue_day_counters`, `link_day_counters` and `list_counters`.
- `metrics`: the metric names, what each rate is over, and the one rule for "a send that
  reached readers" (stats, report and the archive's publish rule count by it).
- `queries`: what `stats` and `report` show, read from the counters.
- `text`: `stats` as text tables, CSV and JSON.
- `report`: the self-contained HTML page of `newsletter report`.
"""
