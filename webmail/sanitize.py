"""HTML mail cleaned for display: nh3 (the Rust `ammonia` sanitizer) with an allow-list.

Why nh3 and not a hand-written filter: HTML parsing is where sanitizers fail (mutation
XSS, parser differentials); ammonia parses with html5ever, the same tree builder rules a
browser uses, and re-serialises what it kept. Bleach, the Python alternative, is
deprecated upstream.

The cleaned HTML is then shown in a sandboxed, script-less, network-less frame (see
`webmail.security.FRAME_CSP`): the sanitizer is the first wall, the frame the second.

Policy (issue 14, "HTML mail"):
- tags for formatting, tables, lists, links and images only; `<script>` and `<style>`
  dropped with their content; forms, frames, `<base>`, `<meta>`, SVG, MathML dropped;
- `style` attributes keep only allow-listed properties, and a declaration list that
  mentions `url(`, `expression(` or a CSS escape is dropped whole (no remote fetch, no
  obfuscated one);
- `src` only `data:image/...` (remote images are dropped and counted: the sender learns
  nothing about when and where the doctor read the mail); `cid:` references are not
  inlined yet and are dropped too (not counted: they are not remote);
- links only `http:`, `https:` and `mailto:`, opened in a new tab with
  `rel="noopener noreferrer"`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import nh3

ALLOWED_TAGS = frozenset({
    "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center", "cite",
    "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small",
    "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt",
    "u", "ul", "var",
})

_GENERIC = {"style", "title", "dir", "lang", "align", "valign", "width", "height"}
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "*": _GENERIC,
    "a": {"href", "name"},
    "img": {"src", "alt", "border"},
    "table": {"border", "cellpadding", "cellspacing", "bgcolor", "summary"},
    "td": {"colspan", "rowspan", "bgcolor", "nowrap"},
    "th": {"colspan", "rowspan", "bgcolor", "nowrap", "scope"},
    "tr": {"bgcolor"},
    "col": {"span"},
    "colgroup": {"span"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "li": {"value"},
}

STYLE_PROPERTIES = frozenset({
    "background-color", "border", "border-bottom", "border-collapse", "border-color", "border-left",
    "border-right", "border-spacing", "border-style", "border-top", "border-width", "color", "font",
    "font-family", "font-size", "font-style", "font-variant", "font-weight", "height", "letter-spacing",
    "line-height", "list-style-type", "margin", "margin-bottom", "margin-left", "margin-right",
    "margin-top", "max-width", "min-width", "padding", "padding-bottom", "padding-left", "padding-right",
    "padding-top", "text-align", "text-decoration", "text-indent", "text-transform", "vertical-align",
    "white-space", "width", "word-break", "word-spacing",
})

LINK_SCHEMES = ("http:", "https:", "mailto:")
# CSS that could fetch (url(), image-set(), @import) or hide a keyword behind an escape.
_DANGEROUS_CSS = re.compile(r"url\s*\(|image-set|expression\s*\(|@import|\\|/\*", re.I)
_IMG_WITHOUT_SRC = re.compile(r'<img(?![^>]*\ssrc=")[^>]*>')
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|jpg|gif|webp|bmp);base64,[a-z0-9+/=\s]*\Z", re.I)


@dataclass(frozen=True)
class CleanHtml:
    html: str
    remote_images: int  # images with a remote (or relative) source, dropped


def clean_html(html: str) -> CleanHtml:
    """The sanitised HTML of a mail body and how many remote images were dropped."""
    blocked = 0

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if attribute == "src":
            if tag == "img" and _DATA_IMAGE.match(value.strip()):
                return value.strip()
            if tag == "img" and not value.strip().lower().startswith("cid:"):
                blocked += 1
            return None
        if attribute == "href":
            stripped = value.strip()
            return stripped if stripped.lower().startswith(LINK_SCHEMES) else None
        if attribute == "style":
            return None if _DANGEROUS_CSS.search(value) else value
        return value

    cleaned = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style", "title", "template", "noscript", "textarea", "select",
                            "option", "svg", "math", "xmp", "iframe", "noembed", "noframes", "object"},
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=attribute_filter,
        url_schemes={"http", "https", "mailto", "data"},
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=set(STYLE_PROPERTIES),
        strip_comments=True,
    )
    # An image whose source was dropped would show as a broken-image icon: it goes.
    # (Safe on ammonia's output: attributes are re-serialised, quoted, one form.)
    cleaned = _IMG_WITHOUT_SRC.sub("", cleaned)
    return CleanHtml(cleaned, blocked)


FRAME_TEMPLATE = (
    '<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">'
    "<style>body{font-family:system-ui,sans-serif;font-size:1rem;line-height:1.45;color:#1b1b1b;"
    "background:#fff;margin:.75rem;overflow-wrap:anywhere}img{max-width:100%;height:auto}"
    "table{max-width:100%}</style></head><body>{body}</body></html>"
)


def frame_document(cleaned: CleanHtml) -> str:
    """The document served at `.../corps`: the cleaned body inside a minimal page. Its
    inline `<style>` is allowed only there (the frame's own CSP; no script can run)."""
    return FRAME_TEMPLATE.replace("{body}", cleaned.html)
