"""A fake XDS.b registry (and MLLP listener) that can be told to answer wrongly.

It exists to prove that the NIST test-kit runner notices a wrong answer: run in
`correct` mode it behaves like a (very small) registry; in the other modes it makes
exactly one kind of mistake:

- `wrong_status`: every submission is answered Failure, even an acceptable one;
- `wrong_error_code`: a refused submission carries XDSRegistryError instead of the
  XDSRegistryMetadataError a correct registry gives;
- `wrong_object`: a stored query returns a document other than the one registered.

Rules of the correct fake: a RegisterDocumentSet-b is accepted and remembered unless its
DocumentEntry title is "refuse me" (then XDSRegistryMetadataError); a stored query
returns the remembered submission whose SubmissionSet uniqueId it names, every object
Approved. The MLLP side acknowledges every message with MSA|AA.
"""

from __future__ import annotations

import copy
import socketserver
import threading
import uuid

from lxml import etree
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from partage.ebxml import constants as C
from partage.ebxml.mtom import read_soap_request
from partage.ebxml.soap import build_envelope, parse_envelope
from partage.hl7.mllp import END, START

MODES = ("correct", "wrong_status", "wrong_error_code", "wrong_object")
RS = f"{{{C.RS}}}"
RIM = f"{{{C.RIM}}}"
QUERY = f"{{{C.QUERY}}}"
REFUSED_TITLE = "refuse me"


class FakeRegistry:
    def __init__(self) -> None:
        self.mode = "correct"
        self.submissions: dict[str, list[etree._Element]] = {}   # SubmissionSet uniqueId -> objects
        self.actions: list[str] = []

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ, start_response):
        request = Request(environ)
        message = read_soap_request(request.headers.get("Content-Type", ""), request.stream,
                                    max_total=50 << 20)
        envelope = parse_envelope(message.root)
        self.actions.append(envelope.action)
        if envelope.action == C.ACTION_REGISTER:
            body = self.register(envelope.body)
        elif envelope.action == C.ACTION_STORED_QUERY:
            body = self.query(envelope.body)
        else:
            body = _response(f"{RS}RegistryResponse", C.STATUS_FAILURE,
                             [("XDSRegistryError", f"the fake does not serve {envelope.action}")])
        out = build_envelope(C.RESPONSE_ACTIONS.get(envelope.action, envelope.action + "Response"), body,
                             relates_to=envelope.message_id)
        response = Response(out, content_type="application/soap+xml; charset=UTF-8")
        return response(environ, start_response)

    # ------------------------------------------------------------------ transactions
    def register(self, body: etree._Element) -> etree._Element:
        objects = [o for o in body.iter(f"{RIM}RegistryObjectList")][0]
        titles = {s.get("value") for s in objects.iter(f"{RIM}LocalizedString")}
        if REFUSED_TITLE in titles:
            code = "XDSRegistryError" if self.mode == "wrong_error_code" else "XDSRegistryMetadataError"
            return _response(f"{RS}RegistryResponse", C.STATUS_FAILURE,
                             [(code, "DocumentEntry.title: this registry refuses it")])
        if self.mode == "wrong_status":
            return _response(f"{RS}RegistryResponse", C.STATUS_FAILURE,
                             [("XDSRegistryError", "refused for no reason")])
        for identifier in objects.iter(f"{RIM}ExternalIdentifier"):
            if identifier.get("identificationScheme") == C.SS_UNIQUE_ID:
                self.submissions[identifier.get("value", "")] = [copy.deepcopy(o) for o in objects]
        return _response(f"{RS}RegistryResponse", C.STATUS_SUCCESS)

    def query(self, body: etree._Element) -> etree._Element:
        wanted = ""
        for slot in body.iter(f"{RIM}Slot"):
            if slot.get("name") == "$XDSSubmissionSetUniqueId":
                wanted = (slot.findtext(f"{RIM}ValueList/{RIM}Value") or "").strip().strip("'")
        response = _response(f"{QUERY}AdhocQueryResponse", C.STATUS_SUCCESS)
        found = etree.SubElement(response, f"{RIM}RegistryObjectList")
        for obj in self.submissions.get(wanted, []):
            obj = copy.deepcopy(obj)
            if etree.QName(obj).localname in ("ExtrinsicObject", "RegistryPackage", "Association"):
                obj.set("status", C.STATUS_APPROVED)
            if self.mode == "wrong_object" and etree.QName(obj).localname == "ExtrinsicObject":
                obj.set("id", f"urn:uuid:{uuid.uuid4()}")   # another document than the one registered
            found.append(obj)
        return response


def _response(tag: str, status: str, errors: list[tuple[str, str]] = ()) -> etree._Element:
    response = etree.Element(tag, nsmap={"rs": C.RS, "rim": C.RIM, "query": C.QUERY}, status=status)
    if errors:
        error_list = etree.SubElement(response, f"{RS}RegistryErrorList")
        for code, context in errors:
            etree.SubElement(error_list, f"{RS}RegistryError", errorCode=code, codeContext=context,
                             severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error")
    return response


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


class _MllpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        buffer = b""
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            buffer += data
            while START in buffer and END in buffer:
                start, end = buffer.index(START), buffer.index(END)
                message, buffer = buffer[start + 1:end].decode("utf-8", "replace"), buffer[end + 2:]
                msh = message.split("\r", 1)[0].split("|")
                control = msh[9] if len(msh) > 9 else ""
                self.server.fed.append(message)
                ack = f"MSH|^~\\&|FAKE|FAKE|||20260101000000||ACK^A01|A{control}|P|2.3.1\rMSA|AA|{control}\r"
                self.request.sendall(START + ack.encode() + END)


class _MllpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeXdsServer:
    """The fake registry on a free HTTP port and an MLLP listener on another, in threads."""

    def __init__(self) -> None:
        self.registry = FakeRegistry()
        self.http = make_server("127.0.0.1", 0, self.registry, threaded=True,
                                request_handler=_QuietHandler)
        self.mllp = _MllpServer(("127.0.0.1", 0), _MllpHandler)
        self.mllp.fed = []
        self.url = f"http://127.0.0.1:{self.http.server_port}/xds/registry"
        self.mllp_address = f"127.0.0.1:{self.mllp.server_address[1]}"
        self._threads = [threading.Thread(target=self.http.serve_forever, daemon=True),
                         threading.Thread(target=self.mllp.serve_forever, daemon=True)]

    @property
    def mode(self) -> str:
        return self.registry.mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; one of {', '.join(MODES)}")
        self.registry.mode = value

    def start(self) -> FakeXdsServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.http.shutdown()
        self.mllp.shutdown()
        self.mllp.server_close()

    def __enter__(self) -> FakeXdsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
