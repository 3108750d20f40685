"""Shared test helpers: render."""

from __future__ import annotations

EVERYTHING = """\
---
title: Alles, was Text sein kann
preheader: Kontrast für jede Zeile
---
Ein Absatz mit [einem Link](https://example.com), **fett**, *kursiv*, `code` und
~~durchgestrichen~~.[^1]

### Dritte Ebene
#### Vierte Ebene
##### Fünfte Ebene
###### Sechste Ebene

> Ein Zitat mit ~~Streichung~~ und [Link](https://example.com/zitat).

| Plattform | Wachstum |
|---|---|
| Instagram | ~~+40 %~~ |

```
code block
```

- Punkt mit [Link](https://example.com/punkt)

[^1]: Eine Fußnote mit [Quelle](https://example.com/quelle).
"""
