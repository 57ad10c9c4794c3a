"""HL7 v2 messages in ER7 (the pipe-delimited encoding): the one reader.

Every HL7 v2 message Partage reads (the ITI-8 ADT feed, the document feed's MDM / ORU, the
acknowledgements its MLLP clients get back, the audit of the feed) is cut into segments,
fields and repetitions here. The values inside a field are read by the composite types of
`partage.metadata.datatypes` (CX, XCN, XON, CE, MSG, EI, ED...), never split by hand.

Fields are handed out in the standard encoding characters (``|^~\\&``): a message that declares
other ones in MSH-1 / MSH-2 is translated once, while it is cut, so that the composite types,
which know only the standard ones, read it correctly (a standard character that is data in
such a message becomes its escape sequence).

Why not hl7apy: its v2.5 / v2.6 structures refuse the PRT segment that the ANS profile
CISIS_CDA_HL7_V2 pre-adopts from v2.9 (``InvalidName``; its custom segments must be Z
segments), and it builds an object per field, component and repetition: 1.5 s and 35 MB for an
8 MB ORU whose OBX-5 holds a base64 document. This reader keeps a field as one string until a
composite type reads it. It is tolerant: it refuses only text that is not a message at all
(no MSH, unusable encoding characters); what a feed requires of a message, it checks itself.
Pure: standard library and `datatypes` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .datatypes import MSG, VID, escape_hl7

__all__ = ["Er7Error", "Er7Message", "MessageHeader", "Segment", "first_segment", "one_line", "read_header",
           "text_field"]

STANDARD_SEPARATORS = "|^~\\&"   # field, component, repetition, escape, subcomponent
STANDARD_ENCODING = STANDARD_SEPARATORS[1:]
HEADER_FIELDS = 18   # MSH-1 .. MSH-18: what an acknowledgement mirrors
_ESCAPE_CODES = {"|": "F", "^": "S", "~": "R", "\\": "E", "&": "T"}


class Er7Error(ValueError):
    """The text is not an HL7 v2 message in ER7."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment. ``fields[n]`` is SEG-n in the standard encoding (for MSH, as the standard
    numbers them: ``fields[1]`` is MSH-1, the field separator, ``fields[2]`` MSH-2)."""

    name: str
    fields: tuple[str, ...]
    position: int = 0   # index of the segment in its message

    def field(self, n: int) -> str:
        """SEG-n as ER7 text (all its repetitions), '' when absent."""
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[str]:
        """The non-empty repetitions of SEG-n, each as ER7 text."""
        return [r for r in self.field(n).split("~") if r]

    def first(self, n: int) -> str:
        """The first repetition of SEG-n ('' when none)."""
        value = self.field(n)
        end = value.find("~")
        return value if end < 0 else value[:end]   # no copy of a megabyte field without repetitions


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """What MSH says, as an acknowledgement needs it: the HD fields as their ER7 text (an
    answer mirrors them as received), the message type and version read."""

    sending_application: str = ""     # MSH-3
    sending_facility: str = ""        # MSH-4
    receiving_application: str = ""   # MSH-5
    receiving_facility: str = ""      # MSH-6
    message_type: MSG = MSG()         # MSH-9
    control_id: str = ""              # MSH-10, as ER7 text (echoed in MSA-2)
    processing_id: str = ""           # MSH-11
    version: str = ""                 # MSH-12.1
    charset: str = ""                 # MSH-18 (first repetition)
    accept_ack_type: str = ""         # MSH-15 (HL7 table 0155: AL, NE, ER, SU)
    application_ack_type: str = ""    # MSH-16 (table 0155); both empty: original acknowledgement mode

    @classmethod
    def of(cls, msh: Segment) -> MessageHeader:
        return cls(msh.field(3), msh.field(4), msh.field(5), msh.field(6), MSG.parse(msh.first(9)),
                   msh.field(10), msh.field(11), VID.parse(msh.first(12)).version_id.strip(), msh.first(18),
                   msh.first(15).strip().upper(), msh.first(16).strip().upper())


@dataclass(frozen=True, slots=True)
class Er7Message:
    """A message cut into segments; ``text`` is the message as received."""

    text: str
    segments: tuple[Segment, ...]
    header: MessageHeader = field(default_factory=MessageHeader)

    @classmethod
    def parse(cls, text: str) -> Er7Message:
        """Er7Error when `text` does not start with a usable MSH segment."""
        lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
        separator, encoding = _delimiters(lines[0])
        translate = _translation(separator, encoding)
        segments = tuple(_segment(line, position, separator, translate)
                         for position, line in enumerate(line for line in lines if line.strip()))
        return cls(text, segments, MessageHeader.of(segments[0]))

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]


def _delimiters(first_line: str) -> tuple[str, str]:
    """(field separator, encoding characters) declared by MSH-1 and MSH-2."""
    if not first_line.startswith("MSH") or len(first_line) < 8:
        raise Er7Error("the message does not start with an MSH segment")
    separator = first_line[3]
    encoding = first_line[4:].split(separator, 1)[0]
    # MSH-2 is 4 characters (5 from v2.7, the truncation character, which reading ignores).
    delimiters = separator + encoding
    if len(encoding) not in (4, 5) or len(set(delimiters)) != len(delimiters) or any(
            c.isalnum() or c.isspace() for c in delimiters):
        raise Er7Error(f"MSH-1/MSH-2 {delimiters!r} are not usable HL7 encoding characters")
    return separator, encoding[:4]


def _translation(separator: str, encoding: str) -> dict[int, str] | None:
    """A str.translate table from the message's encoding to the standard one (None: standard)."""
    declared = separator + encoding
    if declared == STANDARD_SEPARATORS:
        return None
    table = {ord(c): f"\\{code}\\" for c, code in _ESCAPE_CODES.items()}   # standard chars are data
    table.update({ord(c): std for c, std in zip(declared[1:], STANDARD_ENCODING, strict=True)})
    return table


def first_segment(text: str, limit: int = 0) -> str:
    """The first segment of `text` as received, cut to `limit` characters (0: whole); what
    follows it is neither split nor copied."""
    end = min(len(text), limit) if limit else len(text)
    for stop in ("\r", "\n"):
        found = text.find(stop, 0, end)
        if found >= 0:
            end = found
    return text[:end]


def read_header(text: str) -> MessageHeader | None:
    """The MSH of `text` read alone (None when `text` does not start with a usable one), with
    work bounded whatever follows: only the first segment, and only up to MSH-18. This is what
    answers a message refused before it is read (the listener's limits, a failure)."""
    line = first_segment(text)
    try:
        separator, encoding = _delimiters(line)
    except Er7Error:
        return None
    # MSH's parts are MSH-2 .. ; MSH-18 is the 18th part after the name, the rest is left whole.
    return MessageHeader.of(_segment(line, 0, separator, _translation(separator, encoding), HEADER_FIELDS))


# HL7 table 0211 (MSH-18) -> the Python codec; no MSH-18 is read as UTF-8 (this listener's
# default). A label not here is read as UTF-8 too.
CHARSETS = {"ASCII": "ascii", "8859/1": "iso8859-1", "8859/2": "iso8859-2", "8859/5": "iso8859-5",
            "8859/7": "iso8859-7", "8859/9": "iso8859-9", "8859/15": "iso8859-15",
            "UNICODE UTF-8": "utf-8", "": "utf-8"}


def _charset(first_line: str) -> tuple[str, str]:
    """(MSH-18 label, Python codec) of a message whose beginning is `first_line`."""
    header = read_header(first_segment(first_line))
    label = (header.charset if header is not None else "").strip().upper()
    return label, CHARSETS.get(label, "utf-8")


def decode(raw: bytes) -> tuple[str, str]:
    """The text of a message received as bytes, read in the charset its MSH-18 declares, and
    why its bytes are not in that charset ("" when they are; the text then holds U+FFFD where
    they were not, for the acknowledgement)."""
    label, codec = _charset(raw[:4096].decode("latin-1"))
    try:
        return raw.decode(codec), ""
    except UnicodeDecodeError as exc:
        return raw.decode(codec, errors="replace"), (
            f"byte {exc.start} of the message is not {label or 'UTF-8'} (MSH-18 {label or 'empty: UTF-8'})")


def encode(text: str) -> bytes:
    """The bytes of a message (an acknowledgement, a message kept or sent again) in the charset
    its own MSH-18 declares, as `decode` reads them back; a character that charset lacks (only
    in Partage's own text) is written '?'."""
    return text.encode(_charset(text[:4096])[1], errors="replace")


def _segment(line: str, position: int, separator: str, translate: dict[int, str] | None,
             max_fields: int = -1) -> Segment:
    """`max_fields` >= 0: only the parts before that many separators are read (the rest dropped)."""
    parts = line.split(separator, max_fields)[:max_fields] if max_fields >= 0 else line.split(separator)
    name = parts[0].strip()
    values = parts[2:] if name == "MSH" else parts[1:]
    if translate is not None:
        values = [v.translate(translate) for v in values]
    if name == "MSH":
        return Segment(name, ("MSH", "|", STANDARD_ENCODING, *values), position)
    return Segment(name, (name, *values), position)


def one_line(value: str, limit: int = 0) -> str:
    """Free text made fit for one ER7 field: whitespace runs (line ends included) become one
    space; cut to `limit` characters (0: no cut). Escaping is left to the writer."""
    text = " ".join(value.split())
    return text[:limit] if limit else text


def text_field(value: str, limit: int = 0) -> str:
    """Free text written as a whole ER7 field: `one_line`, then the separators escaped."""
    return escape_hl7(one_line(value, limit))
