"""ITI-18 stored-query parameters: the value syntax and each query's parameter table.

Values are written as in ITI TF-2 3.18.4.1.2.3.7: quoted strings `'x'`, lists
`('a','b')`, bare numbers and times `200412`. Several Value elements of one slot are
ANDed for the AND/OR parameters and joined otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..metadata.datatypes import CE, DTM, DatatypeError
from ..metadata.errors import ErrorCode, XdsError, XdsErrors


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
        return _split_list(text[1:-1])
    return [_unquote(text)]


def _split_list(body: str) -> list[str]:
    items, i, n = [], 0, len(body)
    while i < n:
        while i < n and body[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if body[i] == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise ParamSyntaxError(f"unterminated quote in ({body})")
                if body[j] == "'":
                    if j + 1 < n and body[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(body[j])
                j += 1
            items.append("".join(buf))
            i = j + 1
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            items.append(body[i:j].strip())
            i = j
        while i < n and body[i] in " \t\r\n":
            i += 1
        if i < n:
            if body[i] != ",":
                raise ParamSyntaxError(f"expected ',' in ({body})")
            i += 1
    return items


def _unquote(text: str) -> str:
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise ParamSyntaxError(f"unterminated quote: {text!r}")
        return text[1:-1].replace("''", "'")
    return text


@dataclass(frozen=True)
class Param:
    required: bool = False
    multiple: bool = True       # a list of values allowed
    and_or: bool = False        # several Value elements are ANDed groups
    coded: bool = False         # each item is a code: `code^^codingScheme`
    time: bool = False          # the item is a DTM: YYYY[MM[DD[hh[mm[ss]]]]], UTC, no offset


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
DOC_FILTERS = {
    "$XDSDocumentEntryFormatCode": CODED,
    "$XDSDocumentEntryConfidentialityCode": Param(and_or=True, coded=True),
    "$XDSDocumentEntryType": Param(),
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
             "$XDSDocumentEntryLogicalID": Param(), **ASSOCIATION_STATUS}
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
        "$XDSDocumentEntryFormatCode": Param(),
        "$XDSDocumentEntryConfidentialityCode": Param(and_or=True),
        "$XDSDocumentEntryType": Param(),
        "$MetadataLevel": Param(multiple=False),
        **ASSOCIATION_STATUS,
    },
    "GetDocuments": BY_DOC_ID,
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
    "GetFoldersForDocument": {k: v for k, v in BY_DOC_ID.items()
                              if k != "$XDSDocumentEntryLogicalID"},
    "GetRelatedDocuments": {
        "$XDSDocumentEntryEntryUUID": Param(multiple=False),
        "$XDSDocumentEntryUniqueId": Param(multiple=False),
        "$AssociationTypes": Param(required=True),
        "$homeCommunityId": Param(multiple=False),
        "$MetadataLevel": Param(multiple=False),
        "$XDSDocumentEntryType": Param(),
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
    "GetDocumentsAndAssociations": ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId",
                                    "$XDSDocumentEntryLogicalID"),
    "GetFolders": ("$XDSFolderEntryUUID", "$XDSFolderUniqueId", "$XDSFolderLogicalID"),
    "GetSubmissionSetAndContents": ("$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"),
    "GetFolderAndContents": ("$XDSFolderEntryUUID", "$XDSFolderUniqueId"),
    "GetFoldersForDocument": ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
    "GetRelatedDocuments": ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
}


class Params:
    """Validated parameters: `values(name)` flat, `groups(name)` as AND of ORs."""

    def __init__(self, query: str, raw: dict[str, list[str]]) -> None:
        self.query = query
        self._groups: dict[str, list[list[str]]] = {}
        errors: list[XdsError] = []
        table = TABLE[query]
        for name, texts in raw.items():
            param = table.get(name)
            if param is None:
                # ITI TF-2 3.18.4.1.3: unknown parameters are ignored, with a warning.
                errors.append(XdsError(ErrorCode.SQ_PARAM_NUMBER,
                                       f"parameter {name} is not defined for {query}", name, warning=True))
                continue
            try:
                groups = [parse_value(t) for t in texts]
                if param.coded:
                    for item in (i for g in groups for i in g):
                        check_coded(item)
                if param.time:
                    for item in (i for g in groups for i in g):
                        check_time(item)
                if len(groups) > MAX_GROUPS or sum(len(g) for g in groups) > MAX_VALUES:
                    raise ParamSyntaxError(f"too many values (at most {MAX_VALUES}, in at most {MAX_GROUPS} "
                                           "Value elements)")
            except ParamSyntaxError as exc:
                errors.append(XdsError(ErrorCode.REGISTRY_ERROR, f"parameter {name}: {exc}", name))
                continue
            if not param.and_or and not param.multiple and (len(groups) > 1 or len(groups[0]) > 1):
                errors.append(XdsError(ErrorCode.SQ_PARAM_NUMBER,
                                       f"parameter {name} takes a single value", name))
                continue
            self._groups[name] = groups if param.and_or else [[v for g in groups for v in g]]
        for name, param in table.items():
            if param.required and name not in raw:
                errors.append(XdsError(ErrorCode.SQ_MISSING_PARAM,
                                       f"{query} requires parameter {name}", name))
        choice = ONE_OF.get(query)
        if choice:
            given = [n for n in choice if n in self._groups]
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
