"""What the catalog filler writes: plans of SYNTHETIC studies, their series and instances, reports and findings.

`plan` draws a seeded, realistic spread: a patient has 1-8 studies (most one or two) at one site; a study's
type sets its series and their sizes (a chest radiograph is one or two series of one or two images, a CT
a scout and several reconstructions of 50-300 slices, an MR 4-10 sequences); sex, age, dates (2010-2026,
recent years heavier), projects and sites are spread; a fifth of the pseudonyms are written in kanji
(sites configure their pseudonym form), so PatientName wildcards meet kanji. A share of studies has a
report whose findings follow the body part (chest: pneumothorax, effusion, nodule ...), with present,
absent and uncertain statuses, in Japanese or English sentences that `medcloud.nlp` reads back the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from medcloud.nlp.vocabulary import FINDINGS

__all__ = ["ReportPlan", "SeriesPlan", "StudyPlan", "plan", "uniform"]


@dataclass
class SeriesPlan:
    uid: str
    modality: str
    body_part: str
    description: str
    number: int
    instances: list[str]
    sop_class: str = "1.2.840.10008.5.1.4.1.1.2"
    rows: int | None = 512
    columns: int | None = 512
    size: int = 526_000


@dataclass
class ReportPlan:
    text: str
    findings: list[tuple[str, str]]


@dataclass
class StudyPlan:
    uid: str
    project: str
    site: str
    patient: str
    sex: str | None
    age: str | None
    date: date | None
    description: str
    series: list[SeriesPlan] = field(default_factory=list)
    reports: list[ReportPlan] = field(default_factory=list)


def uniform(
    n_instances: int,
    *,
    projects: Sequence[str],
    sites: Sequence[str],
    per_series: int,
    series_per_study: int,
    studies_per_patient: int,
    prefix: str,
    today: date,
) -> Iterator[StudyPlan]:
    """Every study alike: `series_per_study` series of `per_series` instances (the last one cut to fit)."""
    modalities = ("CT", "MR", "CR", "DX", "US")
    body_parts = ("CHEST", "ABDOMEN", "HEAD", "KNEE")
    per_study = per_series * series_per_study
    left = n_instances
    s = 0
    while left > 0:
        patient = s // studies_per_patient
        st = StudyPlan(
            uid=f"{prefix}.{s}",
            project=projects[s % len(projects)],
            site=sites[s % len(sites)],
            patient=f"PSEUDO-{prefix}-{patient}",
            sex="MF"[patient % 2],
            age=f"{20 + patient % 70:03d}Y",
            date=today.replace(year=2015 + s % 10, month=1 + s % 12, day=1 + s % 28),
            description="SYNTHETIC",
        )
        for k in range(series_per_study):
            n = min(per_series, left - k * per_series)
            if n <= 0:
                break
            st.series.append(
                SeriesPlan(
                    uid=f"{prefix}.{s}.{k}",
                    modality=modalities[(s + k) % len(modalities)],
                    body_part=body_parts[s % len(body_parts)],
                    description="SYNTHETIC",
                    number=k + 1,
                    instances=[f"{prefix}.{s}.{k}.{j}" for j in range(n)],
                    size=500_000,
                    rows=None,
                    columns=None,
                )
            )
        left -= per_study
        s += 1
        yield st


# study type -> (share of studies, body parts, [(modality, n series low-high, instances low-high)], description)
_TYPES: dict[str, tuple[float, tuple[str, ...], list[tuple[str, int, int, int, int]], str]] = {
    "chest_xr": (0.30, ("CHEST",), [("CR", 1, 2, 1, 2)], "胸部単純X線 SYNTHETIC"),
    "dx": (0.10, ("CHEST", "KNEE", "SPINE", "HAND"), [("DX", 1, 3, 1, 2)], "DX SYNTHETIC"),
    "ct": (0.22, ("CHEST", "ABDOMEN", "HEAD"), [("CT", 1, 1, 1, 3), ("CT", 1, 4, 50, 300)], "CT SYNTHETIC"),
    "mr": (0.12, ("HEAD", "KNEE", "SPINE"), [("MR", 4, 10, 20, 200)], "MRI SYNTHETIC"),
    "us": (0.12, ("ABDOMEN", "BREAST"), [("US", 1, 1, 5, 40)], "超音波 SYNTHETIC"),
    "mg": (0.08, ("BREAST",), [("MG", 1, 1, 4, 4)], "MAMMOGRAPHY SYNTHETIC"),
    "pet": (0.03, ("WHOLEBODY",), [("CT", 1, 1, 150, 300), ("PT", 1, 1, 150, 300)], "PET-CT SYNTHETIC"),
    "xa": (0.03, ("HEART", "HEAD"), [("XA", 1, 3, 10, 100)], "ANGIO SYNTHETIC"),
}
_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
}
_MATRIX = {"CT": (512, 512, 526_000), "MR": (256, 256, 133_000), "CR": (2048, 2500, 10_240_000),
           "DX": (2048, 2048, 8_400_000), "US": (600, 800, 480_000), "MG": (3328, 2560, 17_000_000),
           "PT": (128, 128, 33_000), "XA": (512, 512, 262_000)}  # fmt: skip
# Findings a report of this body part speaks of.
_CODES_BY_PART = {
    "CHEST": ("pneumothorax", "pleural_effusion", "nodule", "mass", "consolidation", "ground_glass_opacity",
              "emphysema", "atelectasis", "cardiomegaly", "lymphadenopathy", "pneumonia", "calcification"),
    "ABDOMEN": ("ascites", "cyst", "mass", "metastasis", "calcification", "hemorrhage", "lymphadenopathy"),
    "HEAD": ("hemorrhage", "infarction", "stenosis", "aneurysm", "mass", "cyst", "calcification"),
    "BREAST": ("mass", "calcification", "cyst"),
    "WHOLEBODY": ("metastasis", "lymphadenopathy", "mass", "nodule"),
    "HEART": ("stenosis", "aneurysm", "calcification", "cardiomegaly"),
}  # fmt: skip
_BONE = ("fracture", "cyst", "stenosis")
_FAMILY = ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤", "匿名", "仮名")
_GIVEN = ("太郎", "花子", "一郎", "直子", "健", "陽子", "翔", "美咲")
_LATIN = ("ANON", "PSEUDO", "SUBJ", "CASE", "PT")


def _sentence(code: str, status: str, ja: bool) -> str:
    jterms, eterms = FINDINGS[code]
    if ja:
        term = jterms[0]
        return {"present": f"{term}を認める。", "absent": f"{term}は認めない。", "uncertain": f"{term}の疑い。"}[status]
    term = eterms[0]
    return {"present": f"There is {term}.", "absent": f"No {term}.", "uncertain": f"Possible {term}."}[status]


def _report(rng: random.Random, body_part: str, ja: bool) -> ReportPlan:
    codes = _CODES_BY_PART.get(body_part, _BONE)
    picked = rng.sample(codes, min(len(codes), rng.choice((1, 1, 2, 2, 3, 4))))
    found = [(c, rng.choices(("present", "absent", "uncertain"), (0.45, 0.45, 0.10))[0]) for c in picked]
    text = "SYNTHETIC. " + ("" if ja else " ").join(_sentence(c, s, ja) for c, s in found)
    return ReportPlan(text, sorted(found))


def plan(
    n_instances: int,
    *,
    seed: int,
    prefix: str,
    projects: Sequence[str],
    sites: Sequence[str],
    report_share: float,
) -> Iterator[StudyPlan]:
    """Studies with a realistic spread until exactly `n_instances` instances are planned."""
    rng = random.Random(seed)
    reports_rng = random.Random(seed + 1)  # the images' layout does not depend on `report_share`
    kinds = list(_TYPES)
    weights = [_TYPES[k][0] for k in kinds]
    years = list(range(2010, 2027))
    year_w = [1 + (y - 2010) * 0.4 for y in years]
    left = n_instances
    s = 0
    patient_no = 0
    while left > 0:
        patient_no += 1
        site = rng.choice(sites)
        project = rng.choice(projects)
        if rng.random() < 0.2:
            pseudo = f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}^{prefix[-4:]}{patient_no:07d}"
        else:
            pseudo = f"{rng.choice(_LATIN)}-{prefix[-4:]}{patient_no:07d}"
        sex = rng.choices(("M", "F", "O", None), (0.49, 0.49, 0.01, 0.01))[0]
        birth = date(rng.randint(1930, 2024), rng.randint(1, 12), rng.randint(1, 28))
        ja = sites.index(site) % 2 == 0  # half the sites write Japanese reports
        for _ in range(min(8, 1 + int(rng.expovariate(0.9)))):
            if left <= 0:
                break
            kind = rng.choices(kinds, weights)[0]
            _, parts, shape, desc = _TYPES[kind]
            body = rng.choice(parts)
            when: date | None = date(rng.choices(years, year_w)[0], 1, 1) + timedelta(days=rng.randint(0, 364))
            if rng.random() < 0.01:
                when = None
            age = None
            if when is not None and when >= birth:
                days = (when - birth).days
                age = f"{days // 365:03d}Y" if days >= 730 else f"{max(days // 30, 0):03d}M"
            st = StudyPlan(
                uid=f"{prefix}.{s}", project=project, site=site, patient=pseudo, sex=sex, age=age, date=when,
                description=f"{body} {desc}",
            )  # fmt: skip
            number = 0
            for modality, lo_n, hi_n, lo_i, hi_i in shape:
                rows, cols, size = _MATRIX[modality]
                for _ in range(rng.randint(lo_n, hi_n)):
                    if left <= 0:
                        break
                    number += 1
                    n = min(left, max(1, min(300, rng.randint(lo_i, hi_i))))
                    left -= n
                    uid = f"{prefix}.{s}.{number}"
                    st.series.append(
                        SeriesPlan(
                            uid=uid, modality=modality, body_part=body, description=f"{modality} {body} SYNTHETIC",
                            number=number, instances=[f"{uid}.{j}" for j in range(n)],
                            sop_class=_SOP_CLASS[modality], rows=rows, columns=cols, size=size,
                        )
                    )  # fmt: skip
            if reports_rng.random() < report_share:
                st.reports.append(_report(reports_rng, body, ja))
            s += 1
            yield st
