"""The professional's page, below HTTP: values written as a French clinician writes them, dates
in Europe/Paris, ages, the INS; results grouped by panel with flags and trends; treatments
deduplicated without placeholders; the history plot; Pro Santé Connect's claims -> the actor
the bearer door builds."""

from __future__ import annotations

import re
from datetime import date

import pytest
from lxml import etree

from partage.access.actor import AuthenticationRequired
from partage.access.credentials import sample_actors
from partage.access.tokens import actor_from_claims
from partage.metadata.datatypes import CX, DTM, HD, XCN
from partage.metadata.model import Author, Code
from partage.query.clinical import FactRow
from partage.terminology.labels import labels
from partage.web import formatting as fmt
from partage.web import glance, plot
from partage.web.devidp import psc_userinfo
from partage.web.login import _local, psc_claims
from tests import factories as F
from tests.conftest import corpus_path

PID = F.patient_id(7)
DOC = F.document(PID, "urn:uuid:0b3c2f44-52c7-4c5e-9b43-0f8d6c1a2b3c")
DOC2 = F.document(PID, "urn:uuid:1b3c2f44-52c7-4c5e-9b43-0f8d6c1a2b3c")
LABELS = labels()


def fact(kind: str, **fields) -> FactRow:
    base = dict(pk=1, kind=kind, code="", code_system="", display="", value_num=None, value_text="", unit="",
                ref_low="", ref_high="", ref_text="", interpretation="", status="", effective="",
                effective_end="", detail={}, document=DOC)
    base.update(fields)
    return FactRow(**base)


@pytest.mark.parametrize("raw, shown", [
    ("63.000000", "63"), ("1.950", "1,95"), ("0.512", "0,512"), ("12.2", "12,2"), ("100", "100"),
    (12.2, "12,2"), (9.4000000001, "9,4"), ("-0.0", "0"), ("1e3", "1000"), ("abc", "abc"), ("", ""),
    ("NaN", "NaN")])
def test_numbers_as_a_clinician_writes_them(raw, shown):
    assert fmt.number(raw) == shown


@pytest.mark.parametrize("ucum, shown", [
    ("m[IU]/L", "mUI/L"), ("10*9/L", "G/L"), ("10*12/L", "T/L"), ("ug/mL", "µg/mL"), ("umol/L", "µmol/L"),
    ("/uL", "/µL"), ("Cel", "°C"), ("{ratio}", ""), ("{tablet}", "comprimé"), ("mmol/L", "mmol/L"),
    ("kg/m2", "kg/m²"), ("mg/dL", "mg/dL"), ("mL", "mL"), ("U/L", "U/L")])
def test_units_as_french_reports_print_them(ucum, shown):
    assert fmt.unit(ucum) == shown


def test_quantities_and_result_texts():
    assert fmt.quantity("1", "{tablet}") == "1 comprimé" and fmt.quantity("2", "{tablet}") == "2 comprimés"
    assert fmt.stored_quantity("63.000000 g/L") == "63 g/L"
    assert fmt.result_text("0.512 ug/mL") == "0,512 µg/mL" and fmt.result_text("< 0.05") == "< 0,05"
    assert fmt.result_text("paille") == "paille" and fmt.result_text("2 - 4 /[HPF]") == "2 - 4 /champ"


def test_days_and_times_are_paris_time():
    assert fmt.day("20240815063000") == "15/08/2024" and fmt.day_time("20240815063000") == "15/08/2024 à 08:30"
    assert fmt.day_time("20240115063000") == "15/01/2024 à 07:30"            # winter: UTC+1
    assert fmt.day("20231231233000") == "01/01/2024"                         # after midnight in Paris
    assert fmt.day("20240815") == "15/08/2024" and fmt.day("202408") == "08/2024" and fmt.day("1975") == "1975"
    assert fmt.day("") == "" and fmt.day("garbage") == ""


@pytest.mark.parametrize("born, today, shown", [
    (date(1979, 3, 15), date(2026, 3, 14), "46 ans"), (date(1979, 3, 15), date(2026, 3, 15), "47 ans"),
    (date(2025, 1, 31), date(2026, 1, 30), "11 mois"), (date(2024, 12, 1), date(2026, 11, 30), "23 mois"),
    (date(2026, 11, 20), date(2026, 12, 3), "13 jours"), (date(2000, 2, 29), date(2026, 2, 28), "25 ans")])
def test_ages(born, today, shown):
    assert fmt.age(born, today) == shown


def test_the_ins_is_labelled_never_raw():
    assert fmt.ins(CX("279035121510031", HD.iso("1.2.250.1.213.1.4.8"))) == ("INS-NIR", "2 79 03 51 215 100 31")
    assert fmt.ins(CX("279035121510031", HD.iso("1.2.250.1.213.1.4.10")))[0] == "INS-NIR de test"
    assert fmt.ins(CX("1234", HD.iso("1.2.250.1.213.1.4.9"))) == ("INS-NIA", "1234")
    assert fmt.ins(CX("IPP42", HD.iso("1.2.3.4"))) is None
    assert fmt.professional_id("810001234567") == "RPPS 10001234567"


def test_short_labels_and_specimens():
    assert fmt.short_label("Créatinine [Masse/Volume] Sérum/Plasma ; Numérique") == "Créatinine"
    assert fmt.short_label("Hémoglobine A1c/Hémoglobine totale Sang ; Numérique") == \
        "Hémoglobine A1c/Hémoglobine totale"
    assert fmt.short_label("Hémoglobine") == "Hémoglobine"
    assert fmt.specimen("Thyréostimuline [Arbitraire/Volume] Sang buvard ; Numérique") == "Sang buvard"


def test_labels_come_from_the_value_sets():
    assert LABELS("2.16.840.1.113883.5.83", "H") == "Élevé"
    assert LABELS("urn:oid:2.16.840.1.113883.5.1", "F") == "Féminin"
    assert LABELS("1.2.250.1.213.1.1.4.1", "11") == "Synthèse"
    assert LABELS("9.9.9", "H", "fallback") == "fallback"


@pytest.mark.corpus
def test_official_value_sets_of_the_configured_directory_win_over_the_defaults():
    official = labels(str(corpus_path("valuesets")))
    assert official("2.16.840.1.113883.5.83", "H") == "Anormalement haut"       # JDV_HL7_ObservationInterpretation
    assert official("2.16.840.1.113883.6.1", "11502-2") == "CR d'examens biologiques"   # JDV_J07
    assert official("2.16.840.1.113883.4.642.4.130", "low") == "Bas"
    assert LABELS("2.16.840.1.113883.6.1", "11502-2") == ""                   # not among the defaults


def creatinine(value: float, when: str, **extra) -> FactRow:
    fields = dict(code="2160-0", code_system="2.16.840.1.113883.6.1",
                  display="Créatinine [Masse/Volume] Sérum/Plasma ; Numérique", value_num=value,
                  value_text=f"{value}", unit="mg/L", ref_low="7.0 mg/L", ref_high="12.0 mg/L", interpretation="N",
                  effective=when, detail={"panel": "Biochimie"})
    fields.update(extra)
    return fact("lab", **fields)


def test_results_one_line_per_analyte_grouped_by_panel_with_flag_and_trend():
    labs = [creatinine(12.2, "202408150630"), creatinine(11.8, "202407150630"),
            fact("lab", code="718-7", code_system="2.16.840.1.113883.6.1", display="Hémoglobine", value_num=10.1,
                 value_text="10.10", unit="g/dL", ref_low="11.5 g/dL", ref_high="14.5 g/dL", interpretation="L",
                 effective="20240104103000", detail={"section": "HEMATOLOGIE"}),
            creatinine(9.4, "202401150630")]
    panels = glance.panels(labs, LABELS)
    assert [p.name for p in panels] == ["Biochimie", "Hematologie"]
    [line] = panels[0].lines
    assert (line.label, line.value, line.reference, line.date) == ("Créatinine", "12,2 mg/L", "7–12 mg/L", "15/08/2024")
    assert line.flag == "Élevé" and "référence" in line.flag_note    # the lab said N; the range says otherwise
    assert line.trend == "↗" and "11,8 mg/L le 15/07/2024" in line.trend_title and line.count == 3
    hb = panels[1].lines[0]
    assert hb.flag == "Bas" and hb.flag_note == "interprétation du laboratoire" and hb.trend == ""
    steady = glance.panels([creatinine(10, "20240815"), creatinine(10, "20240715")], LABELS)[0].lines[0]
    assert steady.trend == "→" and steady.flag == ""


def test_same_component_different_specimens_are_told_apart():
    a = fact("lab", code="3016-3", code_system="L", display="Thyréostimuline [Arbitraire/Volume] Sérum/Plasma ; Numérique",
             value_num=1.95, unit="m[IU]/L", effective="20140402")
    b = fact("lab", code="29575-8", code_system="L", display="Thyréostimuline [Arbitraire/Volume] Sang buvard ; Numérique",
             value_num=1.95, unit="m[IU]/L", effective="20140402")
    labels_shown = sorted(line.label for line in glance.panels([a, b], LABELS)[0].lines)
    assert labels_shown == ["Thyréostimuline (Sang buvard)", "Thyréostimuline (Sérum/Plasma)"]


def test_current_treatments_once_each_without_placeholders():
    levothyrox = dict(code="62080626", code_system="1.2.250.1.213.2.3.1", display="LEVOTHYROX 75 microgrammes")
    current = [fact("medication", effective="20220211", detail={"dose": "1 {tablet}", "route": "Voie orale"},
                    **levothyrox),
               fact("medication", effective="20200101", document=DOC2, **levothyrox),
               fact("medication", code="X1", code_system="other", display="Levothyrox 75 microgrammes"),
               fact("medication", code="GEN-092.03.01", code_system="1.2.250.1.213.1.1.4.322",
                    display="Autre(s) traitement(s)", detail={"text": "Autre traitement : (texte libre)"}),
               fact("medication", display="Aucun traitement"),
               fact("medication", code="69473265", code_system="1.2.250.1.213.2.3.1",
                    display="ROSUVASTATINE EG 5 mg", detail={"mood": "INT"})]
    shown = glance.treatments(current)
    assert [t.name for t in shown] == ["LEVOTHYROX 75 microgrammes", "ROSUVASTATINE EG 5 mg"]
    assert shown[0].dose == "1 comprimé, voie orale" and shown[0].since == "depuis le 11/02/2022"
    assert shown[1].since.startswith("prescrit le")


def test_allergies_once_each_with_french_criticality():
    found = glance.allergies([fact("allergy", display="PARACETAMOL", effective="20211204",
                                   detail={"criticality": "low", "type": {"display": "allergie médicamenteuse"}}),
                              fact("allergy", display="Paracétamol", effective="20180221")], LABELS)
    assert len(found) == 1 and found[0].criticality == "faible" and found[0].since == "04/12/2021"


def test_history_plot_has_dates_to_scale_and_the_reference_range():
    points = [plot.Point(fmt.paris(d), v, f"{v} mg/L", fmt.day(d))
              for d, v in (("202401150630", 9.4), ("202402150630", 9.8), ("202408150630", 12.2))]
    svg = str(plot.history_svg(points, 7.0, 12.0, "mg/L", "Créatinine <x>"))
    tree = etree.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    circles = tree.findall(".//s:circle", ns)
    assert len(circles) == 3 and tree.find(".//s:rect[@class='reference']", ns) is not None
    assert [t.text for t in tree.findall(".//s:text[@class='date']", ns)] == ["15/01/2024", "15/02/2024", "15/08/2024"]
    xs = [float(c.get("cx")) for c in circles]
    assert (xs[1] - xs[0]) < (xs[2] - xs[1]) / 4          # one month vs six: time to scale
    assert "Créatinine &lt;x&gt;" in svg and "<x>" not in svg and "7–12 mg/L" in svg
    assert str(plot.history_svg([], None, None, "", "")) == ""


@pytest.mark.parametrize("key", ["gp", "doctor", "nurse", "pharmacist", "occupational"])
def test_pro_sante_connect_claims_make_the_actor_the_bearer_door_makes(key):
    expected = sample_actors()[key]
    actor = actor_from_claims(psc_claims(psc_userinfo(expected), {"sub": "x", "sid": "abc"}))
    for name in ("id", "role", "specialty", "structure", "sector", "kind"):
        assert getattr(actor, name) == getattr(expected, name), name
    assert actor.purpose == "normal" and actor.name.endswith(expected.name.split(" (")[0].split()[-1])


def test_claims_without_a_national_id_are_refused():
    with pytest.raises(AuthenticationRequired):
        psc_claims({"given_name": "A", "family_name": "B"}, {"sub": "opaque"})
    role_only = psc_claims({"SubjectNameID": "810000000009", "SubjectRole": ["60^1.2.250.1.213.1.1.5.5"]}, {})
    assert actor_from_claims(role_only).role == "60"


@pytest.mark.parametrize("target, shown", [
    ("/dossier/x", "/dossier/x"), ("https://evil.example/x", "/"), ("//evil.example/x", "/"), ("", "/"),
    ("javascript:alert(1)", "/"), ("dossier", "/"), ("/dossier/x?q=" + "a" * 1011, "/dossier/x?q=" + "a" * 1011),
    ("/dossier/x?q=" + "a" * 3000, "/")])
def test_only_local_paths_are_places_to_return_to(target, shown):
    assert _local(target) == shown


def test_ages_never_negative_and_numbers_never_scientific():
    assert not re.search(r"e[+-]?\d", fmt.number(1e-7)) and fmt.number(1e-7) == "0,0000001"   # never rounded away


def test_timeline_filters_as_the_page_shows_the_documents():
    gp = XCN("810000000042", "DURAND", "Jean", prefix="Dr", assigning_authority=HD.iso("1.2.250.1.71.4.2.1"))
    late = F.document(PID, "urn:uuid:d1", creation_time=DTM("20240630233000"), authors=[Author(person=gp)])
    lab = F.document(PID, "urn:uuid:d2", creation_time=DTM("20240615080000"),
                     type_code=Code("11502-2", "2.16.840.1.113883.6.1", "CR d'examens biologiques"))
    scan = F.document(PID, "urn:uuid:d3", creation_time=DTM("20240101080000"),
                      class_code=Code("31", "1.2.250.1.213.1.1.4.1", "Imagerie médicale"))
    rows = glance.timeline([late, lab, scan], LABELS)
    assert rows[0].day == "01/07/2024"          # 23:30 UTC on 30 June is 1 July in Paris

    def kept(**chosen):
        return [r.document.entry_uuid[-2:] for r in glance.filtered(rows, **chosen)]
    assert kept(low="20240701") == ["d1"] and kept(high="20240630") == ["d2", "d3"]
    assert kept(low="20240615", high="20240615") == ["d2"]
    assert kept(type_code="11502-2") == ["d2"] and kept(class_code="31") == ["d3"]
    assert kept(author="Dr Jean DURAND") == ["d1"] == kept(author="durand") == kept(author="810000000042")
    assert kept(author="Claire MARTIN") == ["d2", "d3"] and kept(author="Jean DURAND", type_code="11502-2") == []


def test_sign_in_settings_are_checked_before_the_server_starts():
    from partage.config import Settings
    assert Settings(oidc_issuer="https://psc.example", oidc_client_secret="s").problems() == []
    problems = " ".join(Settings(oidc_issuer="psc.example", session_lifetime=0).problems())
    assert "--oidc-issuer (PARTAGE_OIDC_ISSUER): 'psc.example' is not an http(s) URL" in problems
    assert "--oidc-client-secret (PARTAGE_OIDC_CLIENT_SECRET): needed" in problems
    assert "--session-lifetime (PARTAGE_SESSION_LIFETIME): 0 must be positive" in problems
