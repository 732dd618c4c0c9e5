"""The walls of docs/DESIGN.md, checked by reading every import in src/ (lazy ones inside functions too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, text: str | None = None) -> set[str]:
    """Every medcloud module `path` (or `text` as if it were there) imports, at any depth of the file,
    relative imports resolved; `from m import n` counts as both m and m.n (n may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text, filename=str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "medcloud" or m.startswith("medcloud.")}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted((SRC / "medcloud").rglob("*.py"))}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _within(module: str, room: str) -> bool:
    return module == f"medcloud.{room}" or module.startswith(f"medcloud.{room}.")


# (importing room, forbidden room, why)
WALLS = [
    ("deid", "ingest", "de-identification runs at the site and never needs the hub's ingest"),
    ("deid", "store", "de-identification never touches the catalog or the blob store"),
    ("deid", "hub", "nothing below hub imports hub"),
    ("deid", "gateway", "the gateway uses deid, never the other way"),
    ("ingest", "deid", "ingest reads de-identified files through formats, never deid"),
    ("gateway", "store", "the gateway never loads the hub's store or SQLAlchemy"),
    ("gateway", "hub", "nothing below hub imports hub"),
    ("ingest", "hub", "nothing below hub imports hub"),
    ("store", "hub", "nothing below hub imports hub"),
    ("formats", "", "formats depends on nothing of medcloud but errors"),
]


def _violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, imported in graph.items():
        room = _room(module)
        for target in sorted(imported):
            for source_room, forbidden, why in WALLS:
                if room != source_room:
                    continue
                if forbidden:
                    broken = _within(target, forbidden)
                else:  # formats: only itself and medcloud.errors
                    broken = not (_within(target, "formats") or _within(target, "errors") or target == "medcloud")
                if broken:
                    out.append(f"{module} imports {target}: {why}")
    return out


def test_walls_hold() -> None:
    graph = _graph()
    assert "medcloud.formats.dicom" in graph and "medcloud.deid.engine" in graph
    assert _violations(graph) == []


def test_the_wall_check_sees_lazy_and_relative_imports() -> None:
    """The checker itself: an import inside a function, or a relative one, is still an arrow."""
    probe = SRC / "medcloud" / "deid" / "_wall_probe.py"  # never written: its text is given
    text = "def f():\n    from medcloud.ingest.dicom import read_dicom\n    from ..store import blobs\n"
    found = _imports(probe, text)
    assert found == {"medcloud.ingest.dicom", "medcloud.ingest.dicom.read_dicom", "medcloud.store",
                     "medcloud.store.blobs"}  # fmt: skip
    assert len(_violations({"medcloud.deid._wall_probe": found})) == 4
    assert _violations({"medcloud.formats.x": {"medcloud.errors", "medcloud.errors.InvalidInput"}}) == []
    assert len(_violations({"medcloud.formats.x": {"medcloud.config"}})) == 1


@pytest.mark.parametrize("entry", ["medcloud.gateway.intake", "medcloud.gateway.scp", "medcloud.gateway.runner"])
def test_gateway_reads_a_dicom_file_without_sqlalchemy_or_the_store(entry: str, tmp_path: Path) -> None:
    """A fresh interpreter imports the gateway, de-identifies and checks one DICOM file through its intake."""
    source = tmp_path / "in" / "ct.dcm"
    source.parent.mkdir()
    source.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    script = f"""
import importlib, sys, time
from pathlib import Path
importlib.import_module({entry!r})
from medcloud.gateway.intake import Intake
from medcloud.gateway.outbox import Outbox
from medcloud.deid import Deidentifier, DeidOptions, SiteKey

src = Path({str(source)!r})
outbox = Outbox(Path({str(tmp_path / "outbox")!r}))
deid = Deidentifier(SiteKey(bytes(range(32))), DeidOptions(allow_burned_in=True))
intake = Intake(outbox, deid, src.parent, max_file_bytes=1 << 30)
outcome = intake.handle(src)
assert outcome == "queued", (outcome, intake.stats)
loaded = sorted(m for m in sys.modules if m == "sqlalchemy" or m.startswith(("sqlalchemy.", "medcloud.store")))
print("LOADED", loaded)
assert not loaded, loaded
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LOADED []" in done.stdout


def test_the_cli_starts_without_heavy_libraries() -> None:
    """`medcloud --help` imports every command group: none may pull pydicom, numpy, SQLAlchemy, FastAPI,
    httpx or an HE/ML library at import time (package faces load their names on first use)."""
    heavy = ["pydicom", "numpy", "sqlalchemy", "fastapi", "httpx", "tenseal", "flwr", "torch", "onnxruntime"]
    script = f"import sys, medcloud.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_lazy_package_faces_resolve_every_exported_name() -> None:
    import importlib

    for package in ("medcloud.gateway", "medcloud.hub", "medcloud.vision", "medcloud.federated"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"
        assert set(module.__all__) <= set(dir(module))
