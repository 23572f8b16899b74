"""`/recherche`: De, À, Objet, Texte, dates, "avec pièce jointe", one folder or all.

The form becomes a `mssmail.store.query` tree, the one IMAP SEARCH compiles its keys
into, and the store evaluates it (`search` for one folder, `search_mailbox` for all):
a search here answers what the same keys answer over IMAP, by construction.

| field | query node | IMAP key |
|---|---|---|
| De / À / Objet | `Header("from"/"to"/"subject", v)` | FROM / TO / SUBJECT |
| Texte | `Text(v)` (headers and bodies) | TEXT |
| Du / Au | `DateRange("sent", du, au + 1 day)` (the Date: header, as the list shows) | SENTSINCE / SENTBEFORE |
| avec pièce jointe | `HasAttachment()` | (none) |

Bad input: every text is cut at 200 characters (issue 14) and stripped of control
characters; it is a plain substring (RFC 3501 6.4.4), so `%`, `_`, `*` or quotes are
just characters, never patterns; a date that is not a date is a clear message
(`role="alert"`), nothing searched. GET: a search changes nothing (it is audited as a
read by the store when it looks into content); results are links to the messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from mssmail.store import query
from mssmail.store.actors import Actor

if TYPE_CHECKING:
    from webmail.app import Webmail

MAX_INPUT = 200
MAX_SHOWN = 200  # results listed on the page (newest first); the count says how many matched
ALL_FOLDERS = ""
TEXT_FIELDS = (("de", "De"), ("a", "À"), ("objet", "Objet"), ("texte", "Texte du message"))
BAD_DATE = "Date invalide : utilisez le format AAAA-MM-JJ (par exemple 2026-12-07)."
BAD_RANGE = "La date de début est après la date de fin."
EMPTY = "Indiquez au moins un critère de recherche."


def clean(value: str | None) -> str:
    """A search text as the store gets it: at most 200 characters, no control ones."""
    text = "".join(c for c in (value or "")[:MAX_INPUT] if c.isprintable())
    return text.strip()


def parse_day(value: str) -> date | None:
    """An `<input type="date">` value (ISO 8601, YYYY-MM-DD); ValueError otherwise."""
    value = value.strip()
    if not value:
        return None
    if len(value) != 10:
        raise ValueError(value)
    return date.fromisoformat(value)


@dataclass(frozen=True)
class Criteria:
    """What the form asked, cleaned (shown back in the form as typed, cut)."""

    de: str = ""
    a: str = ""
    objet: str = ""
    texte: str = ""
    du: str = ""
    au: str = ""
    pj: bool = False
    dossier: str = ALL_FOLDERS

    @classmethod
    def of(cls, params: Any) -> Criteria:
        return cls(clean(params.get("de")), clean(params.get("a")), clean(params.get("objet")),
                   clean(params.get("texte")), clean(params.get("du"))[:10], clean(params.get("au"))[:10],
                   params.get("pj") == "1", str(params.get("dossier") or "")[:1000])

    @property
    def empty(self) -> bool:
        return not (self.de or self.a or self.objet or self.texte or self.du or self.au or self.pj)

    def to_query(self) -> query.Query:
        """The store's query tree (ValueError with the French text for bad dates)."""
        try:
            since, until = parse_day(self.du), parse_day(self.au)
        except ValueError:
            raise ValueError(BAD_DATE) from None
        if since and until and since > until:
            raise ValueError(BAD_RANGE)
        items: list[query.Query] = []
        for field, value in (("from", self.de), ("to", self.a), ("subject", self.objet)):
            if value:
                items.append(query.Header(field, value))
        if self.texte:
            items.append(query.Text(self.texte))
        if since or until:
            items.append(query.DateRange("sent", since, until + timedelta(days=1) if until else None))
        if self.pj:
            items.append(query.HasAttachment())
        if not items:
            return query.All()
        return items[0] if len(items) == 1 else query.And(tuple(items))


@dataclass(frozen=True)
class Hit:
    folder: str
    uidvalidity: int
    summary: Any  # mssmail.store.api.MessageSummary


class SearchPage:
    def __init__(self, webmail: Webmail) -> None:
        self.webmail = webmail

    async def get(self, request: Request) -> Response:
        from webmail.app import NOT_FOUND_TEXT, NOT_REACHABLE, client_ip

        web = self.webmail
        session = await web.session(request)
        if session is None:
            return web.to_login(request)
        params = request.query_params
        address = (params.get("boite") or session.mailbox)[:320].strip().lower()
        criteria = Criteria.of(params)
        asked = any(k in params for k in ("de", "a", "objet", "texte", "du", "au", "pj"))
        try:
            context = await web._sidebar(session, address)
        except NOT_REACHABLE:
            return web.error(404, NOT_FOUND_TEXT, session)
        error = ""
        hits: list[Hit] = []
        total = 0
        status = 200
        if asked:
            try:
                tree = criteria.to_query()
                if criteria.empty:
                    raise ValueError(EMPTY)
            except ValueError as exc:
                error, status = str(exc), 400
            else:
                try:
                    hits, total = await web.store.run(self._search, session.mailbox, address, criteria, tree,
                                                      client_ip(request))
                except NOT_REACHABLE:
                    return web.error(404, NOT_FOUND_TEXT, session)
        return web.page("search.html", status, title="Recherche", session=session, criteria=criteria,
                        asked=asked and not error, error=error, hits=hits, total=total, shown=MAX_SHOWN,
                        text_fields=TEXT_FIELDS, **context)

    def _search(self, login: str, address: str, criteria: Criteria, tree: query.Query,
                ip: str) -> tuple[list[Hit], int]:
        """(the newest MAX_SHOWN hits over the folders searched, how many matched);
        blocking, on the store's threads."""
        store = self.webmail.store
        actor = Actor.user(login)
        folders = None if criteria.dossier == ALL_FOLDERS else [criteria.dossier]
        found = store.search_mailbox(actor, address, tree, folders=folders, ip=ip)
        total = sum(len(f.uids) for f in found)
        hits: list[Hit] = []
        for folder in found:
            newest = sorted(folder.uids, reverse=True)[:MAX_SHOWN]
            hits += [Hit(folder.ref.name, folder.ref.uidvalidity, s)
                     for s in store.message_summaries(folder.ref, newest)]
        hits.sort(key=lambda h: h.summary.date or h.summary.internal_date, reverse=True)
        return hits[:MAX_SHOWN], total
