"""Finding and Diagnosis: validation, ordering, JSON round trip, escaped HTML."""

from __future__ import annotations

import json

import pytest

from babysit.findings import CODES, Diagnosis, Finding


def finding(code="DEAD_RELU", severity="warning", **kw):
    return Finding(code, severity, kw.pop("message", "msg"), "advice", {"fraction": 0.8}, **kw)


def test_unknown_code_and_severity_are_rejected():
    with pytest.raises(ValueError, match="unknown finding code 'DEAD_RELUS'"):
        finding("DEAD_RELUS")
    with pytest.raises(ValueError, match="severity must be one of"):
        finding(severity="fatal")


def test_every_code_has_a_valid_default_severity():
    assert len(CODES) >= 40
    assert {severity for severity, _ in CODES.values()} <= {"error", "warning", "info"}


def test_diagnosis_orders_by_severity_and_reports_ok():
    d = Diagnosis([finding("CLASS_IMBALANCE", "info"), finding("NAN_LOSS", "error"), finding()])
    assert [f.severity for f in d] == ["error", "warning", "info"]
    assert d.codes == {"CLASS_IMBALANCE", "NAN_LOSS", "DEAD_RELU"} and not d.ok
    assert Diagnosis([finding()]).ok and Diagnosis().ok


def test_json_round_trip_carries_the_schema():
    d = Diagnosis([finding(layer="2", step=10)])
    document = json.loads(d.to_json())
    assert document["schema"] == 1 and document["ok"] is True
    assert Finding.from_dict(document["findings"][0]) == d.findings[0]


def test_html_escapes_user_strings():
    html = Diagnosis([finding(message="<script>alert(1)</script>")])._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
