"""ITI-18 stored-query parameters: the value syntax and each query's parameter table.

Values are written as in ITI TF-2a 3.18.4.1.2.3.5: quoted strings `'x'` (a quote inside doubled),
lists `('a','b')` of one value at least, bare numbers and times `200412`. A parameter is one
Slot; the values of its Value elements are ORed. Only the AND/OR parameters may be given in
several Slots of the same name, which are ANDed (3.18.4.1.2.3.6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..ebxml import constants as C
from ..metadata.datatypes import CE, DTM, DatatypeError
from ..metadata.errors import ErrorCode, XdsError, XdsErrors

# A request's parameters as read from its rim:AdhocQuery: name -> its Slots -> each Slot's
# Value texts, in document order.
RawParams = Mapping[str, Sequence[Sequence[str]]]


class ParamSyntaxError(ValueError):
    pass


# A parameter's cost bound (as FHIR search's, docs/robustness.md): each value is a bind
# parameter (PostgreSQL takes at most 65535 per statement, past which the driver fails as if
# the database were down: a 503), each AND group one more EXISTS, whose planning grows with
# their square.
MAX_VALUES, MAX_GROUPS = 1000, 20


def parse_value(text: str) -> list[str]:
    """One Value element's text -> its items (a list always, quotes removed)."""
    text = text.strip()
    if not text:
        raise ParamSyntaxError("empty value")
    if text.startswith("("):
        if not text.endswith(")"):
            raise ParamSyntaxError(f"list not closed: {text!r}")
        items = _split_list(text[1:-1])
        if not items:
            raise ParamSyntaxError("empty list: a list holds one value at least")
        return items
    if text.startswith("'"):
        item, end = _quoted(text, 0)
        if text[end:].strip():
            raise ParamSyntaxError(f"one quoted string expected (several values are a list in "
                                   f"parentheses, a quote inside is doubled): {text!r}")
        return [item]
    if "'" in text or "," in text:
        raise ParamSyntaxError(f"neither a quoted string, a list nor a number: {text!r}")
    return [text]


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The string quoted at text[start] (a doubled quote stands for one) and the index after it."""
    j, buf, n = start + 1, [], len(text)
    while True:
        if j >= n:
            raise ParamSyntaxError(f"unterminated quote in {text!r}")
        if text[j] == "'":
            if j + 1 < n and text[j + 1] == "'":
                buf.append("'")
                j += 2
                continue
            return "".join(buf), j + 1
        buf.append(text[j])
        j += 1


def _split_list(body: str) -> list[str]:
    items: list[str] = []
    i, n = 0, len(body)
    while True:
        while i < n and body[i] in " \t\r\n":
            i += 1
        if i >= n:
            if items:
                raise ParamSyntaxError(f"a value is missing after the last ',' in ({body})")
            return items
        if body[i] == "'":
            item, i = _quoted(body, i)
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            item, i = body[i:j].strip(), j
            if not item or "'" in item:
                raise ParamSyntaxError(f"a value is missing or badly quoted in ({body})")
        items.append(item)
        while i < n and body[i] in " \t\r\n":
            i += 1
        if i >= n:
            return items
        if body[i] != ",":
            raise ParamSyntaxError(f"expected ',' in ({body})")
        i += 1


@dataclass(frozen=True)
class Param:
    required: bool = False
    multiple: bool = True       # a list of values allowed
    and_or: bool = False        # several Value elements are ANDed groups
    coded: bool = False         # each item is a code: `code^^codingScheme`
    time: bool = False          # the item is a DTM: YYYY[MM[DD[hh[mm[ss]]]]], UTC, no offset
    choices: tuple[str, ...] = ()   # the only values it takes (none: any)


def check_coded(item: str) -> None:
    """A coded parameter value is CE fields 1 and 3, `code^^codingScheme`, both present.

    ITI TF-2a 3.18.4.1.2.3.4: a code without its coding scheme is ambiguous, so it is
    refused rather than matched against any scheme.
    """
    try:
        ce = CE.parse(item, strict=True)
    except DatatypeError:
        ce = CE()
    if not ce.identifier.strip() or ce.text or not ce.coding_system.strip() or ce.extra:
        raise ParamSyntaxError(f"{item!r} is not a coded value code^^codingScheme")


def check_time(item: str) -> None:
    """A time parameter is a DTM (ITI TF-3 Table 4.2.3.1.7-2): compared as text otherwise,
    an ISO date or an offset would silently select the wrong documents."""
    try:
        DTM(item.strip())
    except DatatypeError as exc:
        raise ParamSyntaxError(str(exc)) from None


CODED = Param(coded=True)
TIME = Param(multiple=False, time=True)
# $XDSDocumentEntryType: the objectType of a DocumentEntry, Stable or On-Demand (ITI TF-3 4.2.3.2);
# not given, Stable only (ITI TF-2a 3.18.4.1.2.3.7, storedquery.document_filter).
DOCUMENT_TYPE = Param(choices=(C.OBJECT_TYPE_STABLE, C.OBJECT_TYPE_ON_DEMAND))
DOC_FILTERS = {
    "$XDSDocumentEntryFormatCode": CODED,
    "$XDSDocumentEntryConfidentialityCode": Param(and_or=True, coded=True),
    "$XDSDocumentEntryType": DOCUMENT_TYPE,
}
FIND_DOCUMENTS = {
    "$XDSDocumentEntryPatientId": Param(required=True, multiple=False),
    "$XDSDocumentEntryClassCode": CODED,
    "$XDSDocumentEntryTypeCode": CODED,
    "$XDSDocumentEntryPracticeSettingCode": CODED,
    "$XDSDocumentEntryCreationTimeFrom": TIME,
    "$XDSDocumentEntryCreationTimeTo": TIME,
    "$XDSDocumentEntryServiceStartTimeFrom": TIME,
    "$XDSDocumentEntryServiceStartTimeTo": TIME,
    "$XDSDocumentEntryServiceStopTimeFrom": TIME,
    "$XDSDocumentEntryServiceStopTimeTo": TIME,
    "$XDSDocumentEntryHealthcareFacilityTypeCode": CODED,
    "$XDSDocumentEntryEventCodeList": Param(and_or=True, coded=True),
    "$XDSDocumentEntryAuthorPerson": Param(),
    "$XDSDocumentEntryStatus": Param(required=True),
    "$XDSDocumentEntryDocumentAvailability": Param(),
    "$MetadataLevel": Param(multiple=False),
    **DOC_FILTERS,
}
ASSOCIATION_STATUS = {"$XDSAssociationStatus": Param()}
BY_DOC_ID = {"$XDSDocumentEntryEntryUUID": Param(), "$XDSDocumentEntryUniqueId": Param(),
             "$homeCommunityId": Param(multiple=False), "$MetadataLevel": Param(multiple=False),
             **ASSOCIATION_STATUS}
# ITI-18 with Metadata Update: GetDocuments also names every version of a logical id (not
# GetDocumentsAndAssociations nor GetFoldersForDocument).
GET_DOCUMENTS = {**BY_DOC_ID, "$XDSDocumentEntryLogicalID": Param()}
BY_FOLDER_ID = {"$XDSFolderEntryUUID": Param(), "$XDSFolderUniqueId": Param(),
                "$homeCommunityId": Param(multiple=False), "$MetadataLevel": Param(multiple=False),
                "$XDSFolderLogicalID": Param()}
BY_UUID = {"$uuid": Param(required=True), "$homeCommunityId": Param(multiple=False),
           "$MetadataLevel": Param(multiple=False), **ASSOCIATION_STATUS}

TABLE: dict[str, dict[str, Param]] = {
    "FindDocuments": FIND_DOCUMENTS,
    "FindDocumentsByReferenceId": {**FIND_DOCUMENTS,
                                   "$XDSDocumentEntryReferenceIdList": Param(required=True, and_or=True)},
    "FindSubmissionSets": {
        "$XDSSubmissionSetPatientId": Param(required=True, multiple=False),
        "$XDSSubmissionSetSourceId": Param(),
        "$XDSSubmissionSetSubmissionTimeFrom": TIME,
        "$XDSSubmissionSetSubmissionTimeTo": TIME,
        "$XDSSubmissionSetAuthorPerson": Param(multiple=False),
        "$XDSSubmissionSetContentType": CODED,
        "$XDSSubmissionSetStatus": Param(required=True),
    },
    "FindFolders": {
        "$XDSFolderPatientId": Param(required=True, multiple=False),
        "$XDSFolderLastUpdateTimeFrom": TIME,
        "$XDSFolderLastUpdateTimeTo": TIME,
        "$XDSFolderCodeList": Param(and_or=True, coded=True),
        "$XDSFolderStatus": Param(required=True),
        "$MetadataLevel": Param(multiple=False),
    },
    "GetAll": {
        "$patientId": Param(required=True, multiple=False),
        "$XDSDocumentEntryStatus": Param(required=True),
        "$XDSSubmissionSetStatus": Param(required=True),
        "$XDSFolderStatus": Param(required=True),
        "$MetadataLevel": Param(multiple=False),
        **DOC_FILTERS,
        **ASSOCIATION_STATUS,
    },
    "GetDocuments": GET_DOCUMENTS,
    "GetFolders": BY_FOLDER_ID,
    "GetAssociations": BY_UUID,
    "GetDocumentsAndAssociations": BY_DOC_ID,
    "GetSubmissionSets": BY_UUID,
    "GetSubmissionSetAndContents": {
        "$XDSSubmissionSetEntryUUID": Param(multiple=False),
        "$XDSSubmissionSetUniqueId": Param(multiple=False),
        "$homeCommunityId": Param(multiple=False),
        "$MetadataLevel": Param(multiple=False),
        **DOC_FILTERS,
        **ASSOCIATION_STATUS,
    },
    "GetFolderAndContents": {
        "$XDSFolderEntryUUID": Param(multiple=False),
        "$XDSFolderUniqueId": Param(multiple=False),
        "$homeCommunityId": Param(multiple=False),
        "$MetadataLevel": Param(multiple=False),
        **DOC_FILTERS,
        **ASSOCIATION_STATUS,
    },
    "GetFoldersForDocument": {**BY_DOC_ID, "$XDSDocumentEntryEntryUUID": Param(multiple=False),
                              "$XDSDocumentEntryUniqueId": Param(multiple=False)},
    "GetRelatedDocuments": {
        "$XDSDocumentEntryEntryUUID": Param(multiple=False),
        "$XDSDocumentEntryUniqueId": Param(multiple=False),
        "$AssociationTypes": Param(required=True),
        "$homeCommunityId": Param(multiple=False),
        "$MetadataLevel": Param(multiple=False),
        "$XDSDocumentEntryType": DOCUMENT_TYPE,
        **ASSOCIATION_STATUS,
    },
}

# DSUB (ITI-52) subscription filters: FindDocuments' and FindSubmissionSets' filters, with the
# patient required for the patient-dependent ones; $XDSDocumentEntryAuthorInstitution as in
# the DSUB filters of national profiles (an author's organisation). docs/notifications.md.
DSUB_DOCUMENT_FILTERS = {
    "$XDSDocumentEntryClassCode": CODED,
    "$XDSDocumentEntryTypeCode": CODED,
    "$XDSDocumentEntryPracticeSettingCode": CODED,
    "$XDSDocumentEntryHealthcareFacilityTypeCode": CODED,
    "$XDSDocumentEntryEventCodeList": Param(and_or=True, coded=True),
    "$XDSDocumentEntryConfidentialityCode": Param(and_or=True, coded=True),
    "$XDSDocumentEntryFormatCode": CODED,
    "$XDSDocumentEntryAuthorPerson": Param(),
    "$XDSDocumentEntryAuthorInstitution": Param(),
}
DSUB_SUBMISSION_SET_FILTERS = {
    "$XDSSubmissionSetSourceId": Param(),
    "$XDSSubmissionSetAuthorPerson": Param(),
    "$XDSSubmissionSetContentType": CODED,
}
TABLE.update({
    "SubscriptionForDocumentEntry": {"$XDSDocumentEntryPatientId": Param(required=True, multiple=False),
                                     **DSUB_DOCUMENT_FILTERS},
    "SubscriptionForPatientIndependentDocumentEntry": DSUB_DOCUMENT_FILTERS,
    "SubscriptionForSubmissionSet": {"$XDSSubmissionSetPatientId": Param(required=True, multiple=False),
                                     **DSUB_SUBMISSION_SET_FILTERS},
    "SubscriptionForPatientIndependentSubmissionSet": DSUB_SUBMISSION_SET_FILTERS,
})

# Exactly one of each pair must be given.
ONE_OF = {
    "GetDocuments": ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId", "$XDSDocumentEntryLogicalID"),
    "GetDocumentsAndAssociations": ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
    "GetFolders": ("$XDSFolderEntryUUID", "$XDSFolderUniqueId", "$XDSFolderLogicalID"),
    "GetSubmissionSetAndContents": ("$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"),
    "GetFolderAndContents": ("$XDSFolderEntryUUID", "$XDSFolderUniqueId"),
    "GetFoldersForDocument": ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
    "GetRelatedDocuments": ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
}


class Params:
    """Validated parameters: `values(name)` flat, `groups(name)` as AND of ORs (one OR group
    per Slot of an AND/OR parameter)."""

    def __init__(self, query: str, raw: RawParams) -> None:
        self.query = query
        self._groups: dict[str, list[list[str]]] = {}
        errors: list[XdsError] = []
        table = TABLE[query]
        for name, slots in raw.items():
            param = table.get(name)
            if param is None:
                # ITI TF-2 3.18.4.1.3: unknown parameters are ignored, with a warning.
                errors.append(XdsError(ErrorCode.SQ_PARAM_NUMBER,
                                       f"parameter {name} is not defined for {query}", name, warning=True))
                continue
            if len(slots) > 1 and not param.and_or:
                # 3.18.4.1.2.3.6: a second Slot of one name is an AND, for the AND/OR parameters only.
                errors.append(XdsError(ErrorCode.SQ_PARAM_NUMBER,
                                       f"parameter {name} is given in {len(slots)} Slots; only the AND/OR "
                                       "parameters may repeat their Slot", name))
                continue
            try:
                groups = [_slot_values(slot) for slot in slots]
                items = [i for g in groups for i in g]
                if param.coded:
                    for item in items:
                        check_coded(item)
                if param.time:
                    for item in items:
                        check_time(item)
                for item in items:
                    if param.choices and item not in param.choices:
                        raise ParamSyntaxError(f"{item!r} is not one of {', '.join(param.choices)}")
                if len(groups) > MAX_GROUPS or len(items) > MAX_VALUES:
                    raise ParamSyntaxError(f"too many values (at most {MAX_VALUES}, in at most {MAX_GROUPS} "
                                           "Slots)")
            except ParamSyntaxError as exc:
                errors.append(XdsError(ErrorCode.REGISTRY_ERROR, f"parameter {name}: {exc}", name))
                continue
            if not param.multiple and len(items) > 1:
                errors.append(XdsError(ErrorCode.SQ_PARAM_NUMBER,
                                       f"parameter {name} takes a single value", name))
                continue
            self._groups[name] = groups
        for name, param in table.items():
            if param.required and name not in raw:
                errors.append(XdsError(ErrorCode.SQ_MISSING_PARAM,
                                       f"{query} requires parameter {name}", name))
        choice = ONE_OF.get(query)
        if choice:
            given = [n for n in choice if n in raw]   # a wrong value of one is reported above
            if len(given) != 1:
                errors.append(XdsError(
                    ErrorCode.SQ_PARAM_NUMBER if given else ErrorCode.SQ_MISSING_PARAM,
                    f"{query} requires exactly one of {', '.join(choice)}; got "
                    f"{', '.join(given) or 'none'}", query))
        self.warnings = [e for e in errors if e.warning]
        hard = [e for e in errors if not e.warning]
        if hard:
            raise XdsErrors(hard)

    def has(self, name: str) -> bool:
        return name in self._groups

    def values(self, name: str) -> list[str]:
        return [v for g in self._groups.get(name, []) for v in g]

    def value(self, name: str) -> str:
        values = self.values(name)
        return values[0] if values else ""

    def groups(self, name: str) -> list[list[str]]:
        return self._groups.get(name, [])


def _slot_values(values: Sequence[str]) -> list[str]:
    """The items of one Slot: those of each of its Value elements (ORed), one at least."""
    if not values:
        raise ParamSyntaxError("the Slot has no Value")
    return [item for text in values for item in parse_value(text)]
