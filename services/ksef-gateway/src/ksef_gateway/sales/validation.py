"""FA(3) checks before an invoice goes to KSeF: the official XSD, offline, and the facts the sending code needs.

KSeF rejects an invoice that does not validate against the schema declared at session open, and also one with a
UTF-8 BOM, a non-UTF-8 encoding or processing instructions (REFERENCE.md §8, §20.1). ``validate_fa3`` reports all of
those with the line and column of the offending markup, so an ERP is told where its document is wrong when it
submits it, instead of through an asynchronous 450 after a session was opened.

The XSD (``schemas/fa3``, copied from the MF publication) imports its base types from ``crd.gov.pl``; a resolver
maps those URLs to the bundled ``schemas/fa3/bazowe`` copies, so compiling never touches the network. (An OASIS
catalog through ``XML_CATALOG_FILES`` is not consulted by the libxml2 2.14 inside lxml 6 for schema imports, and
would be process-wide state anyway.)

Invoices are untrusted input: no DTD is loaded, a document carrying one is refused outright (so a billion-laughs
document is never expanded), entities are never resolved and nothing is fetched.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, cast

from lxml import etree

FA3_NAMESPACE: Final = "http://crd.gov.pl/wzor/2025/06/25/13775/"
FA2_NAMESPACE: Final = "http://crd.gov.pl/wzor/2023/06/29/12648/"
SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schemas"
FA3_XSD: Final = SCHEMA_DIR / "fa3" / "schemat_FA(3)_v1-0E.xsd"
CORRECTION_TYPES: Final = frozenset({"KOR", "KOR_ZAL", "KOR_ROZ"})

_BASE_TYPES_URL: Final = "http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/DefinicjeTypy/"
_BASE_TYPES_DIR: Final = SCHEMA_DIR / "fa3" / "bazowe"
# libxml2 keeps validating after the first error; a document broken everywhere would otherwise cost a column
# search per error for nothing the ERP can use.
MAX_ERRORS: Final = 100


@dataclass(frozen=True)
class XsdError:
    """One reason the document is not a valid FA(3) invoice. ``line`` and ``column`` are 1-based (column counts
    characters); 0 means the position is unknown."""

    line: int
    column: int
    message: str


class InvalidInvoice(ValueError):
    """``read_facts`` was given a document that is not a readable FA(3) invoice (validate it first)."""


@dataclass(frozen=True)
class InvoiceFacts:
    """What the sending code needs from a valid FA(3) invoice (REFERENCE.md §8, §19).

    ``buyer_is_consumer`` is ``Podmiot2/DaneIdentyfikacyjne/BrakID``: the buyer has no tax identifier (B2C). A
    foreign buyer identified by ``KodUE``+``NrVatUE`` or ``NrID`` has no ``buyer_nip`` either, but is not a consumer.
    ``corrected_ksef_numbers`` lists ``DaneFaKorygowanej/NrKSeFFaKorygowanej`` of a correction, in document order;
    a corrected invoice issued outside KSeF (``NrKSeFN``) has none.
    """

    seller_nip: str
    buyer_nip: str | None
    buyer_is_consumer: bool
    invoice_number: str
    issue_date: date
    currency: str
    gross: Decimal
    invoice_type: str
    corrected_ksef_numbers: tuple[str, ...] = ()

    @property
    def is_correction(self) -> bool:
        return self.invoice_type in CORRECTION_TYPES

    @property
    def corrected_ksef_number(self) -> str | None:
        """The corrected invoice's KSeF number (the first one for a collective correction)."""
        return self.corrected_ksef_numbers[0] if self.corrected_ksef_numbers else None


class _BundledSchemas(etree.Resolver):
    """Serve the ``crd.gov.pl`` base-type imports from the bundled copies; anything else falls through to the
    parser, which has ``no_network=True``."""

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:  # type: ignore[override]
        if system_url and system_url.startswith(_BASE_TYPES_URL):
            local = (_BASE_TYPES_DIR / system_url[len(_BASE_TYPES_URL) :]).resolve()
            if local.parent == _BASE_TYPES_DIR and local.is_file():
                return self.resolve_filename(str(local), context)  # type: ignore[attr-defined]
        return None


_schema: etree.XMLSchema | None = None
# One lock for compiling and validating: an ``XMLSchema`` keeps the last run's ``error_log`` on the instance, so two
# threads validating at once would read each other's errors. Parsing and validating a typical invoice takes ~0.3 ms.
_schema_lock = threading.Lock()


def _compile() -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(_BundledSchemas())
    return etree.XMLSchema(etree.parse(str(FA3_XSD), parser))


def fa3_schema() -> etree.XMLSchema:
    """The compiled FA(3) schema, built on first use and kept for the process (call it at start-up to warm up)."""
    global _schema
    if _schema is None:
        with _schema_lock:
            if _schema is None:
                _schema = _compile()
    return _schema


_parsers = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parsers must not be shared between threads; one per thread is cheap and reused.
    parser: etree.XMLParser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            collect_ids=False,
        )
        _parsers.parser = parser
    return parser


class _Refused(Exception):
    def __init__(self, error: XsdError) -> None:
        super().__init__(error.message)
        self.error = error


def _doctype_offset(xml: bytes) -> int:
    """Where a DOCTYPE starts in the prolog, else -1. Checked before libxml2 sees the bytes: an internal subset is
    where entity bombs live, and nothing in it is needed by an invoice."""
    i = 0
    while i < len(xml):
        if xml[i] in b" \t\r\n":
            i += 1
        elif xml.startswith(b"<?", i):
            i = xml.find(b"?>", i + 2)
            i = len(xml) if i < 0 else i + 2
        elif xml.startswith(b"<!--", i):
            i = xml.find(b"-->", i + 4)
            i = len(xml) if i < 0 else i + 3
        else:
            return i if xml.startswith(b"<!DOCTYPE", i) else -1
    return -1


def _line(node: etree._Element) -> int:
    line: object = node.sourceline  # lxml-stubs types it loosely
    return line if isinstance(line, int) else 0


def _in_document_order(root: etree._Element) -> Iterator[etree._Element]:
    yield from reversed(list(root.itersiblings(preceding=True)))
    yield from root.iter()
    yield from root.itersiblings()


def _markup(node: etree._Element) -> str | None:
    if isinstance(node, etree._ProcessingInstruction):
        return "<?" + cast(str, node.target)
    if not isinstance(node.tag, str):  # comments and entity references have no start tag
        return None
    qname = etree.QName(node)
    return f"<{node.prefix}:{qname.localname}" if node.prefix else f"<{qname.localname}"


class _Source:
    """Start-tag positions in the raw document. libxml2 reports column 0 for schema errors, and for a start tag
    spread over several lines the line where it ends; invoices are also often written on one line. So a node is
    found again in the text as the k-th start tag of its name, with comments and CDATA blanked out (the only places
    a literal ``<`` can be something other than markup)."""

    def __init__(self, xml: bytes) -> None:
        self.text = xml.decode("utf-8", errors="replace")
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", self.text)]
        self._blanked: str | None = None

    def position(self, offset: int) -> tuple[int, int]:
        """1-based line and character column of a character offset."""
        line = bisect.bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def locate(self, root: etree._Element, nodes: list[etree._Element]) -> dict[int, tuple[int, int]]:
        """``id(node)`` → (line, column) of each node's start tag that could be found."""
        if self._blanked is None:
            self._blanked = re.sub(
                r"<!--.*?-->|<!\[CDATA\[.*?\]\]>", lambda m: re.sub(r"[^\r\n]", " ", m.group()), self.text, flags=re.S
            )
        wanted = {id(node) for node in nodes}  # the caller keeps the proxies alive, so ids stay unique
        ranks: dict[int, tuple[str, int]] = {}
        seen: dict[str, int] = {}
        for node in _in_document_order(root):
            markup = _markup(node)
            if markup is None:
                continue
            if id(node) in wanted:
                ranks[id(node)] = (markup, seen.get(markup, 0))
            seen[markup] = seen.get(markup, 0) + 1
        offsets: dict[str, list[int]] = {}
        found = {}
        for key, (markup, rank) in ranks.items():
            if markup not in offsets:
                end = r"(?=[\s?])" if markup.startswith("<?") else r"(?=[\s/>])"
                offsets[markup] = [m.start() for m in re.finditer(re.escape(markup) + end, self._blanked)]
            if rank < len(offsets[markup]):
                found[key] = self.position(offsets[markup][rank])
        return found

    def error_at(self, root: etree._Element, node: etree._Element, message: str) -> XsdError:
        line, column = self.locate(root, [node]).get(id(node), (_line(node), 0))
        return XsdError(line, column, message)


def _parse(xml: bytes) -> etree._ElementTree:
    """Parse an untrusted invoice, refusing what KSeF refuses before the schema is even looked at (§8)."""
    if xml.startswith(b"\xef\xbb\xbf"):
        raise _Refused(XsdError(1, 1, "the document starts with a UTF-8 byte order mark, which KSeF rejects"))
    doctype = _doctype_offset(xml)
    if doctype >= 0:
        line, column = _Source(xml[: doctype + 1]).position(len(xml[:doctype].decode("utf-8", errors="replace")))
        raise _Refused(XsdError(line, column, "DOCTYPE declarations are not allowed in an invoice"))
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as exc:
        # ``exc.position`` is this document's; ``exc.error_log`` may still hold entries of earlier documents.
        line, column = exc.position
        raise _Refused(XsdError(line or 0, column or 0, f"not well-formed XML: {exc.msg}")) from None
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:  # the prolog scan missed it: still refuse
        raise _Refused(XsdError(1, 1, "DOCTYPE declarations are not allowed in an invoice"))
    encoding = (tree.docinfo.encoding or "UTF-8").upper()
    if encoding not in {"UTF-8", "UTF8"}:
        raise _Refused(XsdError(1, 1, f"the document is encoded as {encoding}; KSeF accepts UTF-8 only"))
    for node in _in_document_order(root):
        if isinstance(node, etree._ProcessingInstruction):
            raise _Refused(_Source(xml).error_at(root, node, "processing instructions are not allowed"))
    qname = etree.QName(root)
    if qname.namespace == FA2_NAMESPACE:
        message = f"this is an FA (2) invoice; KSeF Hub sends FA (3) (namespace '{FA3_NAMESPACE}')"
        raise _Refused(_Source(xml).error_at(root, root, message))
    if (qname.localname, qname.namespace) != ("Faktura", FA3_NAMESPACE):
        found = f"'{qname.localname}' in " + (f"namespace '{qname.namespace}'" if qname.namespace else "no namespace")
        message = f"the root element must be 'Faktura' in namespace '{FA3_NAMESPACE}' (FA (3)), found {found}"
        raise _Refused(_Source(xml).error_at(root, root, message))
    return tree


def _message(entry: Any) -> str:
    # ``{http://crd.gov.pl/wzor/2025/06/25/13775/}P_2`` → ``P_2``: every element of the invoice is in that namespace.
    return str(entry.message).replace("{" + FA3_NAMESPACE + "}", "")


def validate_fa3(xml: bytes) -> list[XsdError]:
    """Check an invoice against the FA(3) XSD (and the §8 rules on the bytes); an empty list means valid."""
    try:
        tree = _parse(xml)
    except _Refused as refused:
        return [refused.error]
    schema = fa3_schema()
    with _schema_lock:
        valid = schema.validate(tree)
        entries = [] if valid else list(cast(Iterable[Any], schema.error_log))[:MAX_ERRORS]
    if not entries:
        return []
    root = tree.getroot()
    nodes: list[etree._Element | None] = []
    for entry in entries:
        found = tree.xpath(entry.path) if entry.path else None
        nodes.append(found[0] if isinstance(found, list) and found and isinstance(found[0], etree._Element) else None)
    positions = _Source(xml).locate(root, [node for node in nodes if node is not None])
    errors = []
    for entry, node in zip(entries, nodes, strict=True):
        line, column = positions.get(id(node), (entry.line, entry.column))
        errors.append(XsdError(line, column, _message(entry)))
    return errors


_NS: Final = {"fa": FA3_NAMESPACE}


def _optional(parent: etree._Element, path: str) -> str | None:
    found = parent.find(path, _NS)
    return None if found is None or not (found.text or "").strip() else (found.text or "").strip()


def _required(parent: etree._Element, path: str) -> str:
    text = _optional(parent, path)
    if text is None:
        raise InvalidInvoice(f"the invoice has no {path.replace('fa:', '')}")
    return text


def read_facts(xml: bytes) -> InvoiceFacts:
    """The facts of a valid FA(3) invoice; raises ``InvalidInvoice`` when they cannot be read (the document is not
    revalidated: call ``validate_fa3`` first)."""
    try:
        root = _parse(xml).getroot()
    except _Refused as refused:
        raise InvalidInvoice(refused.error.message) from None
    buyer = root.find("fa:Podmiot2/fa:DaneIdentyfikacyjne", _NS)
    try:
        issue_date, gross = (
            date.fromisoformat(_required(root, "fa:Fa/fa:P_1")),
            Decimal(_required(root, "fa:Fa/fa:P_15")),
        )
    except (ValueError, InvalidOperation) as exc:
        if isinstance(exc, InvalidInvoice):
            raise
        raise InvalidInvoice("the invoice's P_1 or P_15 is malformed") from None
    return InvoiceFacts(
        seller_nip=_required(root, "fa:Podmiot1/fa:DaneIdentyfikacyjne/fa:NIP"),
        buyer_nip=None if buyer is None else _optional(buyer, "fa:NIP"),
        buyer_is_consumer=buyer is not None and _optional(buyer, "fa:BrakID") == "1",
        invoice_number=_required(root, "fa:Fa/fa:P_2"),
        issue_date=issue_date,
        currency=_required(root, "fa:Fa/fa:KodWaluty"),
        gross=gross,
        invoice_type=_required(root, "fa:Fa/fa:RodzajFaktury"),
        corrected_ksef_numbers=tuple(
            (node.text or "").strip()
            for node in root.iterfind("fa:Fa/fa:DaneFaKorygowanej/fa:NrKSeFFaKorygowanej", _NS)
        ),
    )
