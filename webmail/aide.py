"""`/aide`: what each page does and the keyboard shortcuts.

The shortcuts themselves live in `static/raccourcis.js` (a file: the CSP allows no
inline script); `SHORTCUTS` is the list this page shows, and a unit test checks that
the script handles every key listed here, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from webmail.app import Webmail

# (key, what it does); the order of the page.
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("/", "Aller à la recherche (place le curseur dans le champ de recherche)"),
    ("n", "Écrire un nouveau message"),
    ("j", "Message suivant de la liste"),
    ("k", "Message précédent de la liste"),
    ("r", "Répondre au message affiché"),
)


class HelpPage:
    def __init__(self, webmail: Webmail) -> None:
        self.webmail = webmail

    async def get(self, request: Request) -> Response:
        web = self.webmail
        session = await web.session(request)
        if session is None:
            return web.to_login(request)
        context = await web._sidebar(session, session.mailbox)
        return web.page("aide.html", title="Aide", session=session, shortcuts=SHORTCUTS, **context)
