"""Hypothesis strategies for the model's typed HL7 values, shared by the round-trip tests."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st

from partage.metadata.datatypes import CX, DTM, HD, XCN, XON, XTN, Recipient

chars = st.sampled_from("ab Z9.-é^&|~\\") | st.characters(exclude_categories=("Cs",))
text = st.text(chars, max_size=8)
nonempty = text.filter(lambda t: bool(t.strip()))
arcs = st.integers(0, 10**7).map(str)
oids = st.builds(lambda first, rest: ".".join([str(first), *rest]), st.integers(0, 2),
                 st.lists(arcs, min_size=1, max_size=6))
iso_hds = st.builds(HD.iso, oids) | st.just(HD())
cxs = st.builds(CX, id=nonempty, assigning_authority=iso_hds, id_type=text)
xcns = st.builds(XCN, id_number=nonempty, family_name=text, given_name=text, prefix=text,
                 assigning_authority=iso_hds)
xons = st.builds(XON, organization_name=nonempty, assigning_authority=iso_hds, id_type=text,
                 organization_identifier=text)
xtns = st.builds(XTN, use_code=st.just("NET"), equipment_type=st.just("Internet"), email=nonempty)
dtms = st.builds(lambda moment, precision: DTM.from_datetime(moment, precision),
                 st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1),
                              timezones=st.just(UTC)),
                 st.sampled_from([4, 6, 8, 10, 12, 14]))
recipients = st.builds(Recipient, st.none() | xons, st.none() | xcns, st.none() | xtns).filter(
    lambda r: bool(r.format()))
