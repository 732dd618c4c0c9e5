"""The DICOMweb rows of tests/hub/test_authz.py's route x role table, and how to call each route."""

from __future__ import annotations

from typing import Any

from tests.dicomweb.conftest import stow_body
from tests.hub.conftest import Hub, deidentified_dicom

_R = {"researcher"}
DICOMWEB_EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/dicom-web/studies"): _R,
    ("GET", "/dicom-web/series"): _R,
    ("GET", "/dicom-web/instances"): _R,
    ("GET", "/dicom-web/studies/{study}/series"): _R,
    ("GET", "/dicom-web/studies/{study}/instances"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances"): _R,
    ("GET", "/dicom-web/studies/{study}"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}"): _R,
    ("GET", "/dicom-web/studies/{study}/metadata"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/metadata"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"): _R,
    ("GET", "/dicom-web/studies/{study}/rendered"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/rendered"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered"): _R,
    ("GET", "/dicom-web/studies/{study}/thumbnail"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/thumbnail"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail"): _R,
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail"): _R,
    ("POST", "/dicom-web/studies"): {"site_a"},
    ("POST", "/dicom-web/studies/{study}"): {"site_a"},
}


def dicomweb_call(hub: Hub, method: str, path: str, headers: dict[str, str], ctx: dict[str, str]) -> Any:
    """Call one DICOMweb route for the instance `ctx` names (stored by site_a into project lung)."""
    inst = hub.state.catalog.query.get_instance(ctx["sop_uid"], None)
    url = path.format(study=ctx["study_uid"], series=inst["series_uid"], instance=ctx["sop_uid"], frames="1")
    if method == "POST":
        body = stow_body([deidentified_dicom(study_uid=ctx["study_uid"])])
        ctype = 'multipart/related; type="application/dicom"; boundary=dw-boundary'
        return hub.client.post(url, content=body, headers={**headers, "Content-Type": ctype})
    return hub.client.get(url, headers=headers)
