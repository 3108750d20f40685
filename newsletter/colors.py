"""CSS colours and their contrast (WCAG 2.x), for the theme's checks and the email's tests.

Parsing is tinycss2's (CSS Color Level 3: hex, rgb(), hsl(), the named colours).
"""

from __future__ import annotations

import re

#: WCAG AA for normal-size text.
AA_CONTRAST = 4.5

#: The colours the built-in templates put under the theme's colours.
CARD_BACKGROUND = "#ffffff"
FOOTER_TEXT = "#52525b"

RGB = tuple[float, float, float]

_PLAIN_HEX = re.compile(r"#([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def parse_color(value: str) -> RGB | None:
    """(r, g, b) in 0..1 for an opaque CSS colour; None for anything else."""
    plain_hex = _PLAIN_HEX.fullmatch(value)
    if plain_hex:
        # `#rgb` or `#rrggbb`, nearly every theme: the values tinycss2 gives, without loading
        # it (20-60 ms of every command, which validates the project's theme).
        digits = plain_hex[1] if len(plain_hex[1]) == 6 else "".join(c * 2 for c in plain_hex[1])
        return (int(digits[0:2], 16) / 255, int(digits[2:4], 16) / 255, int(digits[4:6], 16) / 255)
    # deferred: tinycss2.color3 costs 6 ms at start-up
    from tinycss2.color3 import parse_color as css_color

    color = css_color(value)
    if color is None or isinstance(color, str) or color.alpha < 1:
        return None
    return (color.red, color.green, color.blue)


def relative_luminance(rgb: RGB) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(foreground: RGB, background: RGB) -> float:
    """1 (none) to 21 (black on white)."""
    light, dark = sorted(
        (relative_luminance(foreground), relative_luminance(background)), reverse=True
    )
    return (light + 0.05) / (dark + 0.05)


#: [theme] keys that hold colours: the key, what it colours, and on what background.
THEME_COLORS = ("brand_color", "background_color", "text_color")


def theme_contrast_problems(theme: dict[str, str]) -> list[tuple[str, str]]:
    """(key, message) for each theme colour pair below AA, as the built-in templates use them."""
    pairs = [
        ("text_color", "the text", theme["text_color"], CARD_BACKGROUND, "the white card"),
        ("brand_color", "links", theme["brand_color"], CARD_BACKGROUND, "the white card"),
        (
            "text_color",
            "the masthead's name",
            theme["text_color"],
            theme["background_color"],
            "background_color",
        ),
        (
            "background_color",
            "the footer text",
            FOOTER_TEXT,
            theme["background_color"],
            "background_color",
        ),
    ]
    problems = []
    for key, what, fg, bg, on in pairs:
        fg_rgb, bg_rgb = parse_color(fg), parse_color(bg)
        if fg_rgb is None or bg_rgb is None:
            continue  # the config check reports colours that do not parse
        ratio = contrast_ratio(fg_rgb, bg_rgb)
        if ratio < AA_CONTRAST:
            problems.append(
                (
                    key,
                    f"{what} ({fg}) on {on} ({bg}) has a contrast of {ratio:.2f}:1, "
                    f"below the {AA_CONTRAST}:1 that WCAG AA asks for",
                )
            )
    return problems
