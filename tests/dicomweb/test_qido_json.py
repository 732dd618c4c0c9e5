"""QIDO-RS answers written fast are the answers written plainly: the per-VR single-value path of
`qido_results` gives what `element` gives, and `qido_results_json` (orjson) the text json.dumps writes."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from medcloud.dicomweb import json as dj
from medcloud.dicomweb.query import Level, parse_qido

VALUES: list[Any] = [
    None, "", "x", "漢字 かな", 'quote " back \\ slash', "ctl \x01\n\t", "\u2028", 0, 1, -7, 2**40, 1.5, "12",
    " 3.25 ", True, date(2024, 1, 2), "20240102", ["CT", "MR"], ["", None], [], ("a",), {"Alphabetic": "A^B"},
]  # fmt: skip


@pytest.mark.parametrize("vr", sorted(dj._ELEMENT_BY_VR))
def test_each_vrs_single_value_path_is_element(vr: str) -> None:
    for value in VALUES:
        try:
            expected = dj.element(vr, value)
        except (TypeError, ValueError, AttributeError):  # a value this VR cannot hold: both refuse it
            with pytest.raises((TypeError, ValueError, AttributeError)):
                dj._ELEMENT_BY_VR[vr](vr, value)
            continue
        assert dj._ELEMENT_BY_VR[vr](vr, value) == expected, (vr, value)


def _rows(level: Level) -> list[dict[str, Any]]:
    study = {
        "study_uid": "1.2.3", "study_date": date(2024, 1, 2), "patient_pseudonym": "山田^太郎", "patient_sex": "F",
        "patient_age": "045Y", "description": 'CT "chest"\n', "modalities": ["CT", "SR"], "n_series": 2,
        "n_instances": 120,
    }  # fmt: skip
    empty = {**study, "study_date": None, "patient_pseudonym": "", "patient_sex": None, "modalities": [],
             "n_series": 0, "n_instances": None, "description": None}  # fmt: skip
    rows = [study, empty]
    if level is not Level.STUDY:
        extra = {"series_uid": "1.2.3.4", "modality": "CT", "series_description": "軸位", "series_number": 3,
                 "body_part": "CHEST", "n_instances": 60}  # fmt: skip
        rows = [{**r, **extra} for r in rows] + [{**empty, **{k: None for k in extra}, "series_uid": "9"}]
    if level is Level.INSTANCE:
        extra = {"sop_uid": "1.2.3.4.5", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": 7,
                 "rows": 512, "columns": 512, "frames": None, "transfer_syntax": "1.2.840.10008.1.2.1"}  # fmt: skip
        rows = [{**r, **extra} for r in rows] + [{**rows[-1], **{k: None for k in extra}, "sop_uid": "8"}]
    return rows


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize(
    "params", [[], [("includefield", "all")], [("includefield", "00081030,00080060,00080090,00100030")]]
)
def test_the_json_text_is_json_dumps_of_the_datasets(level: Level, params: list[tuple[str, str]]) -> None:
    query = parse_qido(level, params, fixed={})
    rows = _rows(level)
    datasets = dj.qido_results(query, rows, "http://hub/dicom-web")
    text = dj.qido_results_json(query, rows, "http://hub/dicom-web")
    assert text == json.dumps(datasets, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    # and the datasets are element's, attribute by attribute
    columns = dj._columns(query, tuple(dj._level_values(level, rows[0], "http://hub/dicom-web")))
    for row, dataset in zip(rows, datasets, strict=True):
        held = dj._level_values(level, row, "http://hub/dicom-web")
        assert dataset == {tag: dj.element(vr, held.get(kw)) for tag, vr, kw in columns}


def test_json_bytes_writes_what_json_dumps_writes_for_a_stow_answer() -> None:
    """The STOW-RS answer (strings, integers, nested sequences, kanji, control characters) is written by
    `json_bytes` as json.dumps writes it; an integer past 64 bits, which orjson refuses, still is."""
    body = {
        "00081190": dj.element("UR", "http://hub/dicom-web/studies/1.2.3"),
        "00081199": {"vr": "SQ", "Value": [{"00081150": dj.element("UI", "1.2.840.10008.5.1.4.1.1.2"),
                                            "00081155": dj.element("UI", "1.2.3.4"),
                                            "00081190": dj.element("UR", "http://hub/x?山田=\u2028\"\\\x01")}]},
        "00081198": {"vr": "SQ", "Value": [{"00081197": dj.element("US", 0xA700), "00081155": {"vr": "UI"}}]},
    }  # fmt: skip
    plain = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    assert dj.json_bytes(body) == plain
    assert dj.json_bytes({"vr": "SQ"}) == b'{"vr":"SQ"}'
    huge = {"x": {"vr": "SV", "Value": [2**70]}}
    assert dj.json_bytes(huge) == json.dumps(huge, separators=(",", ":")).encode()
