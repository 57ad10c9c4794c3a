"""The registry's stored JSON form round-trips every model object exactly."""

from hypothesis import given, settings
from hypothesis import strategies as st

from partage.metadata import codec
from partage.metadata.model import (
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    Folder,
    ObjectType,
    SubmissionSet,
)
from tests.strategies import cxs, dtms, recipients, xcns, xons, xtns

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
codes = st.builds(Code, text, text, text)
authors = st.builds(Author, st.none() | xcns, st.lists(xons, max_size=2), st.lists(text, max_size=2),
                    st.lists(text, max_size=2), st.lists(xtns, max_size=2))
statuses = st.sampled_from(list(AvailabilityStatus)) | st.none()
common = dict(entry_uuid=text, availability_status=statuses, home_community_id=text, title=text,
              comments=text, extra_slots=st.dictionaries(text, st.lists(text, max_size=2), max_size=2),
              lid=text, version=text)

documents = st.builds(
    DocumentEntry, **common, unique_id=text, patient_id=st.none() | cxs, source_patient_id=st.none() | cxs,
    source_patient_info=st.lists(text, max_size=3), object_type=st.sampled_from(list(ObjectType)),
    mime_type=text, hash=text, size=st.none() | st.integers(0, 2**40), creation_time=st.none() | dtms,
    service_start_time=st.none() | dtms, legal_authenticator=st.none() | xcns,
    limited_metadata=st.booleans(), class_code=st.none() | codes, type_code=st.none() | codes,
    confidentiality_codes=st.lists(codes, max_size=3), event_codes=st.lists(codes, max_size=3),
    authors=st.lists(authors, max_size=2), reference_ids=st.lists(cxs, max_size=2))
submission_sets = st.builds(SubmissionSet, **common, unique_id=text, source_id=text, patient_id=st.none() | cxs,
                            submission_time=st.none() | dtms, content_type_code=st.none() | codes,
                            intended_recipients=st.lists(recipients, max_size=2),
                            authors=st.lists(authors, max_size=2))
folders = st.builds(Folder, **common, unique_id=text, patient_id=st.none() | cxs,
                    last_update_time=st.none() | dtms,
                    codes=st.lists(codes, max_size=3))
associations = st.builds(Association, **common,
                         association_type=st.sampled_from(list(AssociationType)) | text,
                         source_uuid=text, target_uuid=text, submission_set_status=text,
                         previous_version=text, original_status=text, new_status=text,
                         documentation=st.none() | codes)


@settings(max_examples=150)
@given(st.one_of(documents, submission_sets, folders, associations))
def test_round_trip(obj):
    assert codec.from_dict(codec.to_dict(obj)) == obj


def test_unknown_keys_are_ignored():
    data = codec.to_dict(DocumentEntry(entry_uuid="urn:uuid:1", title="t"))
    data["attribute_of_a_newer_version"] = 1
    assert codec.from_dict(data) == DocumentEntry(entry_uuid="urn:uuid:1", title="t")
