"""The free-text cleaner: recall bars on the labelled set, each kind of identifier, and issue 10's repro file."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medcloud.deid import Deidentifier, DeidOptions, SiteKey
from medcloud.deid.freetext import clean
from medcloud.deid.text import Scrubber

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

# The issue's values: none may survive, in any form the cleaner could leave behind.
REPRO = {
    "ImageComments": "患者 山田太郎 さんの画像",
    "StudyDescription": "胸部CT 連絡先 03-1234-5678",
    "SeriesDescription": "他院ID 12345678 比較",
    "ProtocolName": "送付先 taro.yamada@example.jp",
    "AdditionalPatientHistory": "前回 2024年4月1日 撮影",
    "TextValue": "住所 東京都新宿区西新宿2-8-1",
}
REPRO_NEEDLES = [
    "山田",
    "太郎",
    "03-1234-5678",
    "1234-5678",
    "12345678",
    "taro.yamada",
    "example.jp",
    "2024年4月1日",
    "4月1日",
    "東京都",
    "新宿",
    "2-8-1",
]


def _rows() -> list[dict[str, object]]:
    path = ROOT / "tests" / "deid" / "data" / "freetext_labelled.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_labelled_set_is_large_and_covers_every_kind_in_both_languages() -> None:
    rows = _rows()
    assert len(rows) >= 200
    for split in ("tune", "heldout", "heldout2"):
        for lang in ("ja", "en"):
            kinds = {sp["kind"] for r in rows if r["split"] == split and r["lang"] == lang for sp in r["spans"]}  # type: ignore[attr-defined]
            assert kinds >= {"name", "phone", "email", "id", "address", "date", "age"}, (split, lang, kinds)


@pytest.mark.parametrize("part", ["tune", "heldout", "heldout2"])
def test_recall_per_kind_meets_the_bar(part: str) -> None:
    import freetext as bench

    res = bench.evaluate([r for r in _rows() if r["split"] == part])
    low = {k: v["recall"] for k, v in res["recall"].items() if v["recall"] < 0.99}
    assert not low, (low, res["misses"])
    # False removals are reported by the bench; a cleaner that blanks everything must not pass.
    assert res["false_removals"]["word_rate"] < 0.15


@pytest.mark.parametrize(
    ("text", "gone", "kind"),
    [
        ("胸部CT 山田太郎", "山田太郎", "name"),
        ("やまだたろうさん 術前", "やまだたろう", "name"),
        ("ヤマダ タロウ様", "タロウ", "name"),
        ("Referred by Dr. Jane Doe for nodule", "Doe", "name"),
        ("CT CHEST KUROSAWA AKIRA", "KUROSAWA", "name"),
        ("Call 090-1234-5678 today", "1234-5678", "phone"),
        ("Call (555) 123-4567 today", "123-4567", "phone"),
        ("mail t.suzuki@example.com please", "suzuki@", "email"),
        ("Outside MRN 7654321 compared", "7654321", "id"),
        ("Accession A1234567 compared", "A1234567", "id"),
        ("東京都新宿区西新宿2-8-1 在住", "西新宿", "address"),
        ("lives at 123 Main Street, Springfield", "Main Street", "address"),
        ("prior 2024-04-01 exam", "2024-04-01", "date"),
        ("prior April 1, 2024 exam", "April 1", "date"),
        ("前回 令和6年4月1日 撮影", "令和6年", "date"),
        ("前回 H30.12.5 撮影", "H30.12.5", "date"),
        ("前回 2024年4月1日 撮影", "2024年4月1日", "date"),
        ("a 93-year-old woman with a fall", "93", "age"),
        ("95歳 女性 骨折疑い", "95歳", "age"),
        ("胸部CT 森 海", "海", "name"),
        ("胸部CT やまだ たろう", "たろう", "name"),
        ("Seen by François Lefèvre", "Lef", "name"),
        ("Mammo Screening Jane Doe", "Doe", "name"),
        ("John Q. Public called", "Public", "name"),
        ("Patient: john smith", "smith", "name"),
        ("電話：03（1234）5678 まで", "5678", "phone"),
        ("ID 1234 5678 照合", "5678", "id"),
        ("Minato-ku, Tokyo 150-0002", "0002", "address"),
        ("サクラマンション101号室 在住", "101号室", "address"),
        ("prior 2024-Apr-01 exam", "Apr", "date"),
        ("九十二歳 女性", "九十二", "age"),
        ("ninety-two year old woman", "ninety", "age"),
        ("前回 令和6.4.1 撮影", "6.4.1", "date"),
        ("生年月日 S.55.3.3", "55.3.3", "date"),
        ("seen by taro sato today", "sato", "name"),
        ("signed J. Smith", "Smith", "name"),
        ("per Smith J, radiology", "Smith", "name"),
        ("Consult Mary-Jane Watson", "Watson", "name"),
        ("前回4/1撮影", "4/1", "date"),
        ("受付番号：A-123 照合", "A-123", "id"),
        ("聖路加国際病院より紹介", "聖路加", "institution"),
        ("Imaging at St. Luke's International Hospital", "Luke", "institution"),
    ],
)
def test_each_kind_is_removed(text: str, gone: str, kind: str) -> None:
    got = clean(text)
    assert got.text is None or gone not in got.text
    assert got.text is None or kind in got.kinds


@pytest.mark.parametrize(
    "text",
    [
        "CT CHEST WITH CONTRAST",
        "MR BRAIN W/WO",
        "Chest Routine Low Dose",
        "AX T2 FLAIR",
        "胸部単純CT 肺野条件",
        "頭部MRI 拡散強調像",
        "TR 2000ms slice 5mm",
    ],
)
def test_descriptors_without_identifiers_are_kept(text: str) -> None:
    assert clean(text).text == text and not clean(text).changed


def test_honorifics_and_particles_beside_a_name_are_kept() -> None:
    assert clean("患者 山田太郎 さんの画像").text == "患者 *** さんの画像"
    assert clean("スズキ イチロウさん 術前評価").text == "***さん 術前評価"


def test_ages_of_89_and_under_are_kept() -> None:
    assert clean("89歳 女性").text == "89歳 女性"
    assert clean("a 45-year-old man").text == "a 45-year-old man"


def test_dates_shift_and_keep_like_the_engine() -> None:
    assert clean("prior 2024-04-01 exam", dates="shift", shift_days=-10).text == "prior 2024-03-22 exam"
    assert clean("前回 令和6年4月1日", dates="shift", shift_days=1).text == "前回 2024年4月2日"
    assert clean("prior 2024-04-01 exam", dates="keep").text == "prior 2024-04-01 exam"


def test_known_values_are_one_input() -> None:
    got = clean("Comment about Zyxwq", known=Scrubber({"zyxwq"}))
    assert got.text is not None and "Zyxwq" not in got.text and "known" in got.kinds


def test_text_that_cannot_be_analysed_is_removed() -> None:
    assert clean("환자 김철수").remove
    assert clean("Пациент Иванов").remove
    assert clean("山田太郎").remove  # nothing but a name: nothing worth keeping


def test_results_are_cached_per_string() -> None:
    from medcloud.deid.freetext import _clean_short

    clean("SAG T1 cached descriptor")
    before = _clean_short.cache_info().hits
    clean("SAG T1 cached descriptor")
    assert _clean_short.cache_info().hits == before + 1


def repro_file() -> bytes:
    """Issue 10's file: six free-text fields carry identifiers found nowhere else in the header."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Doe^John"
    ds.PatientID = "P0001"
    for kw in ("ImageComments", "StudyDescription", "SeriesDescription", "ProtocolName", "AdditionalPatientHistory"):
        setattr(ds, kw, REPRO[kw])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = REPRO["TextValue"]
    ds.ContentSequence = Sequence([item])
    # A sequence the table does not list, holding a comment: nested text is cleaned too.
    nested = Dataset()
    nested.ImageComments = REPRO["ImageComments"]
    ds.ReferencedImageSequence = Sequence([nested])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("opts", [DeidOptions(), DeidOptions(retain_longitudinal_modified_dates=True)])
def test_issue10_repro_identifying_free_text_does_not_survive(opts: DeidOptions) -> None:
    out = Deidentifier(SiteKey(bytes(range(32))), opts).deidentify_bytes(repro_file(), "r.dcm").data
    text = out.decode("utf-8", errors="ignore")
    left = [n for n in REPRO_NEEDLES if n in text]
    assert not left, left
    ds = pydicom.dcmread(io.BytesIO(out))
    assert "CT" in str(ds.get("StudyDescription", ""))  # the descriptor itself is kept, cleaned


def test_svs_head_free_text_is_cleaned_and_structure_kept() -> None:
    from medcloud.deid.images import clean_svs_description

    desc = (
        "Aperio Image Library v10.0.50\r\nPatient Kurosawa Akira 03-1234-5678\r\n山田太郎 標本\r\n"
        "label 387x463|AppMag = 20|User = x"
    )
    got = clean_svs_description(desc)
    assert got.startswith("Aperio Image Library v10.0.50\r\n") and "label 387x463|AppMag = 20" in got
    for gone in ("Kurosawa", "Akira", "1234-5678", "山田", "User"):
        assert gone not in got
    # A name after the geometry does not ride on the structure line's exemption.
    geometry = "Aperio Image Library v10.0.50\r\n2220x2967 [0,100 2220x2967] (240x240) JPEG/RGB Q=30"
    assert clean_svs_description(geometry + "|AppMag = 20") == geometry + "|AppMag = 20"
    assert "Yamada" not in clean_svs_description(geometry + " Yamada Taro|AppMag = 20")


@pytest.mark.parametrize(
    "text",
    [
        ("a" * 60_000) + " 山田太郎 " + ("1" * 30_000) + " " + ("x." * 20_000),
        "12-" * 30_000,  # each triple a date: overlap checks must not be quadratic
        "a-" * 90_000,  # hyphenated runs: ID lookaheads must start once per run
        "Abc D. " * 20_000,
        "2024年" * 20_000,
    ],
    ids=["mixed-runs", "digit-dash", "hyphen-words", "initials", "years"],
)
def test_issue10_long_text_is_cleaned_in_linear_time_and_not_cached(text: str) -> None:
    import time

    from medcloud.deid.freetext import _clean_short

    clean("山田 warm-up")  # analyser and word lists load once, not part of the bound
    size = _clean_short.cache_info().currsize
    t0 = time.process_time()
    got = clean(text)
    assert time.process_time() - t0 < 5.0
    assert got.text is None or "山田" not in got.text
    assert _clean_short.cache_info().currsize == size


def test_text_over_the_limit_is_removed() -> None:
    assert clean("y" * 200_001).remove
