from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import pydicom
import pytest
from deid_helpers import sample
from typer.testing import CliRunner

from medcloud.deid import SiteKey
from medcloud.deid.cli import parse_options, run_deid
from medcloud.errors import ConfigError, InvalidInput, PathEscape


def test_site_key_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "site.key"
    key = SiteKey.generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SiteKey.load(path) == key and len(key.secret) == 32
    with pytest.raises(ConfigError, match="already exists"):
        SiteKey.generate(path)
    with pytest.raises(ConfigError, match="not found"):
        SiteKey.load(tmp_path / "missing.key")
    short = tmp_path / "short.key"
    short.write_text("abcd")
    with pytest.raises(ConfigError, match="need 32"):
        SiteKey.load(short)
    os.chmod(path, 0o644)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SiteKey.load(path)
    assert any("readable by group/others" in str(w.message) for w in caught)


def test_parse_options() -> None:
    opts = parse_options(["retain-modified-dates", "retain-safe-private=GEMS_PARM_01:0x13", "no-clean-descriptors"])
    assert opts.retain_longitudinal_modified_dates and not opts.clean_descriptors
    assert opts.retain_safe_private and opts.safe_private_allowlist == frozenset({("GEMS_PARM_01", 0x13)})
    with pytest.raises(InvalidInput, match="unknown --option"):
        parse_options(["retain-everything"])


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "in"
    (src / "study1" / "series1").mkdir(parents=True)
    (src / "study1" / "series1" / "ct.dcm").write_bytes(sample("CT_small.dcm").read_bytes())
    (src / "study1" / "mr.dcm").write_bytes(sample("MR_small.dcm").read_bytes())
    (src / "us.dcm").write_bytes(sample("US1_UNCR.dcm").read_bytes())
    data = sample("CT_small.dcm").read_bytes()
    (src / "broken.dcm").write_bytes(data[: len(data) // 2])
    (src / "notes.txt").write_text("not an image")
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(sample("MR_small.dcm").read_bytes())
    (src / "escape.dcm").symlink_to(outside)
    (src / "linkdir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.dcm").write_bytes(data)
    key = tmp_path / "site.key"
    SiteKey.generate(key)
    return src, key


def test_cli_over_a_folder(tmp_path: Path) -> None:
    import typer

    from medcloud.deid.cli import deid_command

    src, key = _tree(tmp_path)
    dst = tmp_path / "out"
    app = typer.Typer()
    app.command()(deid_command)
    result = CliRunner().invoke(app, [str(src), str(dst), "--key-file", str(key), "--quarantine"])
    assert result.exit_code == 1, result.output  # one broken file and one escaping symlink
    written = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert written == ["quarantine/us.dcm", "study1/mr.dcm", "study1/series1/ct.dcm"]
    ds = pydicom.dcmread(dst / "study1" / "series1" / "ct.dcm")
    assert ds.PatientIdentityRemoved == "YES"
    assert "broken.dcm" in result.output and "truncated" in result.output
    assert "escape.dcm" in result.output and "outside the source" in result.output
    assert "notes.txt" in result.output  # reported as skipped
    assert not (dst / "linkdir").exists()


def test_quarantined_files_are_skipped_unless_asked(tmp_path: Path) -> None:
    src, key = _tree(tmp_path)
    summary = run_deid(src, tmp_path / "out", key, parse_options([]), progress=False)
    assert summary.written == 2
    assert [rel for rel, _ in summary.quarantined] == ["us.dcm"]
    assert not (tmp_path / "out" / "quarantine").exists()
    assert {rel for rel, _ in summary.failed} == {"broken.dcm", "escape.dcm"}


def test_destination_inside_source_is_refused(tmp_path: Path) -> None:
    src, key = _tree(tmp_path)
    with pytest.raises(PathEscape):
        run_deid(src, src / "out", key, parse_options([]), progress=False)


def test_keygen_command(tmp_path: Path) -> None:
    import typer

    from medcloud.deid.cli import keygen_command

    app = typer.Typer()
    app.command()(keygen_command)
    result = CliRunner().invoke(app, [str(tmp_path / "k.key")])
    assert result.exit_code == 0, result.output
    assert len(SiteKey.load(tmp_path / "k.key").secret) == 32


def _deeply_nested_file() -> bytes:
    """A Part 10 file whose ContentSequence nests 1,000 levels deep (undefined lengths)."""
    import struct

    def el(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
        value += b"\x00" if len(value) & 1 else b""
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    inner = b""
    for _ in range(1000):
        inner = (
            struct.pack("<HH2s2xI", 0x0040, 0xA730, b"SQ", 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        )  # fmt: skip
    meta = el(2, 0x10, b"UI", b"1.2.840.10008.1.2.1")
    dataset = el(8, 0x16, b"UI", b"1.2.840.10008.5.1.4.1.1.88.11") + el(8, 0x18, b"UI", b"2.25.7") + inner
    return b"\x00" * 128 + b"DICM" + el(2, 0, b"UL", struct.pack("<I", len(meta))) + meta + dataset


def test_defect10_5a_deid_skips_a_deeply_nested_file_and_goes_on(tmp_path: Path) -> None:
    """Issue 10 (5a): a 1,000-level nested file raised RecursionError and stopped the folder."""
    src, key = _tree(tmp_path)
    (src / "a_deep.dcm").write_bytes(_deeply_nested_file())  # sorted first: the rest must still be done
    summary = run_deid(src, tmp_path / "out", key, parse_options([]), progress=False)
    assert summary.written == 2
    failed = dict(summary.failed)
    assert "nested deeper than" in failed["a_deep.dcm"]
    assert (tmp_path / "out" / "study1" / "series1" / "ct.dcm").exists()


def test_deid_outputs_are_written_atomically_and_private(tmp_path: Path) -> None:
    src, key = _tree(tmp_path)
    out = tmp_path / "out"
    run_deid(src, out, key, parse_options([]), progress=False)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.name.startswith(".")]  # no temporary file left behind
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
