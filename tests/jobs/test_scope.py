"""Job tokens and job submissions: what is refused is refused, with a problem+json and nothing stored."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from medcloud.errors import InvalidInput, PathEscape, TooLarge, Unauthenticated
from medcloud.jobs.code import CodeLimits, check_archive, extract, pack
from medcloud.security.policy import Permission, Role
from medcloud.security.tokens import TokenVerifier, issue_job_token, issue_token
from medcloud.store import Catalog
from tests.jobs.conftest import LiveHub


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    cat.migrate()
    return cat


def test_job_tokens_are_scoped_and_never_issued_by_hand(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput, match="never by hand"):
        issue_token(catalog, role="job", projects=["lung"])
    with pytest.raises(InvalidInput):
        issue_job_token(catalog, job_id="a" * 32, dataset_id="b" * 64, projects=("lung",),
                        lifetime=timedelta(days=30), issued_by="t")  # fmt: skip
    issued = issue_job_token(
        catalog, job_id="a" * 32, dataset_id="b" * 64, projects=("lung",), lifetime=timedelta(minutes=5), issued_by="t"
    )
    p = TokenVerifier(catalog).verify(issued.token)
    assert p.role is Role.JOB and p.job == "a" * 32 and p.dataset == "b" * 64
    assert p.can(Permission.JOB_RUNTIME)
    assert not any(p.can(x) for x in Permission if x is not Permission.JOB_RUNTIME)
    p.require_job("a" * 32)
    p.require_dataset("b" * 64)
    with pytest.raises(Exception, match="another job"):
        p.require_job("c" * 32)
    with pytest.raises(Exception, match="only the dataset version"):
        p.require_dataset("d" * 64)
    # A job row whose scope went missing is refused, never read as an unscoped token.
    import sqlalchemy as sa

    from medcloud.store.tables import tokens

    with catalog.write() as conn:
        conn.execute(sa.update(tokens).where(tokens.c.id == p.token_id).values(scope=None))
    with pytest.raises(Unauthenticated, match="scope"):
        TokenVerifier(catalog).verify(issued.token)


def test_code_archives_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="zip"):
        check_archive(b"not a zip", "main.py")
    with pytest.raises(InvalidInput, match="not in the archive"):
        check_archive(_zip({"other.py": b""}), "main.py")
    with pytest.raises(InvalidInput, match=r"\.py"):
        check_archive(_zip({"run.sh": b""}), "run.sh")
    with pytest.raises(PathEscape):
        check_archive(_zip({"main.py": b"", "../evil.py": b""}), "main.py")
    with pytest.raises(PathEscape):
        check_archive(_zip({"main.py": b"", "/etc/evil": b""}), "main.py")
    with pytest.raises(TooLarge):
        check_archive(
            _zip({"main.py": b"", "big.bin": b"\0" * 2_000_000}), "main.py", CodeLimits(max_unpacked_bytes=10**6)
        )
    with pytest.raises(TooLarge):
        check_archive(
            _zip({f"f{i}.py": b"" for i in range(20)} | {"main.py": b""}), "main.py", CodeLimits(max_files=10)
        )
    good = _zip({"main.py": b"print(1)", "pkg/util.py": b"x = 1"})
    assert sorted(check_archive(good, "main.py")) == ["main.py", "pkg/util.py"]
    extract(good, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "util.py").read_text() == "x = 1"
    folder = tmp_path / "proj"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "main.py").write_text("print(2)")
    (folder / "__pycache__" / "x.pyc").write_bytes(b"junk")
    data, entry = pack(folder)
    assert entry == "main.py" and check_archive(data, entry) == ["main.py"]


def test_bad_submissions_are_refused_and_store_nothing(live_hub: LiveHub, tmp_path: Path) -> None:
    url = f"{live_hub.url}/api/v1/jobs"
    lung, brain = live_hub.datasets["lung"], live_hub.datasets["brain"]
    good = _zip({"main.py": b"print('hi')"})

    def post(who: str | None, data: bytes = good, **params: object) -> httpx.Response:
        headers = {"Content-Type": "application/zip"}
        if who:
            headers["Authorization"] = f"Bearer {live_hub.tokens[who]}"
        return httpx.post(url, params={"dataset": lung, **params}, content=data, headers=headers, timeout=30)

    cases = [
        (post(None), 401),
        (post("clinician"), 403),
        (post("site"), 403),
        (post("researcher_brain"), 404),  # another project's version reads as absent
        (post("researcher", dataset=brain), 404),
        (post("researcher", dataset="0" * 64), 404),
        (post("researcher", dataset="not-a-version"), 400),
        (post("researcher", b"not a zip"), 400),
        (post("researcher", _zip({"../x.py": b"", "main.py": b""})), 400),
        (post("researcher", entrypoint="missing.py"), 400),
        (post("researcher", num_gpus=1), 400),  # the local pool schedules no GPUs
        (post("researcher", timeout_s=10**9), 400),
        (post("researcher", b"\0" * (live_hub.state.settings.jobs_max_code_bytes + 1)), 413),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert live_hub.state.catalog.jobs.list_jobs(None) == []
    outcomes = [o for a, o in live_hub.audit_actions("/api/v1/jobs")]
    assert len(outcomes) == len(cases) and all(o.startswith("refused:") for o in outcomes)
    # Reading another project's job is refused as absent.
    (tmp_path / "ok.py").write_text("print('ok')")
    job = live_hub.client().submit(tmp_path / "ok.py", lung)
    r = httpx.get(f"{url}/{job['id']}", headers={"Authorization": f"Bearer {live_hub.tokens['researcher_brain']}"})
    assert r.status_code == 404
    assert [j["id"] for j in live_hub.client("researcher_brain").list_jobs()] == []
