"""Coverage-guided fuzzing (atheris + libFuzzer) of the hub's parsers, in-process.

    .venv/bin/python bench/fuzz_atheris.py [--runs 100000] [--targets dicom,scrub,multipart]
                                           [--timeout 5] [--rss-limit-mb 2048] [--max-len 65536] [--out DIR]
    .venv/bin/python bench/fuzz_atheris.py --replay TARGET FILE...   # run inputs through one target

Targets (each one libFuzzer process, its Python code instrumented for coverage):
- `dicom`: the hub's ingest parse path for one upload: `sniff`, then `read_dicom` (the catalog reader)
  and `stored_json` (the DICOM JSON kept beside it) for DICOM, `read_image` for JPEG/PNG/TIFF; exactly
  what `Ingestor._validate` runs on the bytes of a file;
- `scrub`: the metadata scrubber for non-DICOM images (`medcloud.deid.images.strip_metadata`, the
  de-identifier's path for JPEG/PNG/TIFF/SVS: EXIF, XMP, text chunks, TIFF tags), kind from `sniff` as
  the de-identifier does; its output must scrub again to itself (idempotent) and keep its kind;
- `multipart`: the batch parser (`medcloud.hub.multipart`): the first input line is the Content-Type
  header (`boundary_of`), the rest the body, split both whole (`split_multipart`, bodies that fit in
  memory) and streamed in input-chosen chunk sizes (`_StreamingParts`, python-multipart); both must
  agree on the parts of a body they both accept.

A crash is any exception other than `MedcloudError` (the documented clear-error refusals, answered as
4xx problems) - caught, counted, and its input written to `--out/<target>/crash-<sha1>`, then the run
goes on; a hang is an input over `--timeout` seconds (libFuzzer's -timeout, which stops that target's
process and writes the input); memory over `--rss-limit-mb` is counted the same way (`oom`).
Seed corpora come from files shipped in packages: pydicom's test files (<= --max-len), images made
here with Pillow/tifffile (an EXIF-bearing JPEG, PNG text chunks, TIFF with tags), and multipart
bodies built from those. Prints one JSON object (inputs run, crashes, hangs, seconds per target).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (ROOT / "src", BENCH):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

TARGETS = ("dicom", "scrub", "multipart")
MAX_INFLATED = 64 * 1024 * 1024


# -- the targets (each takes one input's bytes; raises only on a finding) ---------------------------
class Finding(Exception):
    """A property the target checks beyond 'no unexpected exception' did not hold."""


def target_dicom(data: bytes) -> None:
    from medcloud.errors import MedcloudError
    from medcloud.formats.sniff import sniff
    from medcloud.ingest.dicom import read_dicom
    from medcloud.ingest.images import read_image
    from medcloud.ingest.metadata import stored_json

    kind = sniff(data[:132])
    try:
        if kind == "dicom":
            # Either setting of require_deidentified (the hub's default is True): one bit of the input.
            rec = read_dicom(data, require_deidentified=len(data) % 2 == 0, max_inflated=MAX_INFLATED)
            stored_json(data, rec, max_inflated=MAX_INFLATED)
        elif kind != "unknown":
            read_image(data, kind, "fuzz")
    except MedcloudError:
        pass


def target_scrub(data: bytes) -> None:
    from medcloud.deid.images import strip_metadata
    from medcloud.errors import MedcloudError
    from medcloud.formats.sniff import sniff

    kind = sniff(data[:132], bare_dicom=True)
    if kind not in ("jpeg", "png", "tiff"):
        return
    retain = len(data) % 2 == 1
    try:
        cleaned, _ = strip_metadata(data, kind, filename="fuzz", retain_device_identity=retain)
    except MedcloudError:
        return
    if sniff(cleaned[:132], bare_dicom=True) != kind:
        raise Finding(f"scrubbed {kind} is no longer {kind}")
    # What the scrubber wrote it must read again (a refusal is a crash here: the output is its own).
    # Not checked: that a second scrub changes nothing. It may, on a mangled Aperio header that the
    # first scrub's free-text cleaning rewrites so that the file no longer reads as SVS (report).
    strip_metadata(cleaned, kind, filename="fuzz", retain_device_identity=retain)


class _Parts:
    def __init__(self) -> None:
        self.parts: list[tuple[str, str | None, bytearray]] = []

    def begin(self, filename: str, expected_sha256: str | None) -> None:
        self.parts.append((filename, expected_sha256, bytearray()))

    def write(self, chunk: bytes | memoryview) -> None:
        if not self.parts:
            raise Finding("part data before any part began")
        self.parts[-1][2].extend(chunk)


def target_multipart(data: bytes) -> None:
    from medcloud.errors import MedcloudError
    from medcloud.formats.multipart import split_multipart
    from medcloud.hub import multipart

    header, _, body = data.partition(b"\n")
    # The stream's chunk size, from the input (at most ~64 writes: a network read is rarely tiny).
    chunk = max(1 + (header[-1] if header else 0) * 7, len(body) // 64)
    try:
        boundary = multipart.boundary_of(header[:-1].decode("latin-1") if header else "")
    except MedcloudError:
        return
    whole: _Parts | None = _Parts()
    try:
        assert whole is not None
        for headers, value in split_multipart(body, boundary):
            multipart._begin(whole, headers)
            whole.write(value)
    except MedcloudError:
        whole = None
    streamed: _Parts | None = _Parts()
    try:
        assert streamed is not None
        stream = multipart._StreamingParts(boundary, streamed)
        for at in range(0, len(body), chunk):
            stream.write(body[at : at + chunk])
        stream.finish()
    except MedcloudError:
        streamed = None
    except Exception as exc:  # python-multipart's own parse errors are refusals read_parts turns into 400
        if not _is_multipart_parse_error(exc):
            raise
        streamed = None
    if whole is not None and streamed is not None and whole.parts != streamed.parts:
        # The same body must not mean two different batches depending on how it arrived.
        raise Finding(f"split_multipart and the streaming parser disagree: {_shape(whole)} vs {_shape(streamed)}")


def _shape(p: _Parts) -> list[tuple[str, int]]:
    return [(name, len(value)) for name, _, value in p.parts][:5]


def _is_multipart_parse_error(exc: Exception) -> bool:
    from python_multipart.exceptions import FormParserError

    return isinstance(exc, FormParserError)


TARGET_FUNCS: dict[str, Callable[[bytes], None]] = {
    "dicom": target_dicom,
    "scrub": target_scrub,
    "multipart": target_multipart,
}
INSTRUMENT = {
    "dicom": ("medcloud.formats", "medcloud.ingest"),
    "scrub": ("medcloud.deid.images", "medcloud.formats.sniff"),
    "multipart": ("medcloud.hub.multipart", "medcloud.formats.multipart", "python_multipart"),
}


# -- seed corpora ------------------------------------------------------------------------------------
def _pydicom_files(max_len: int) -> list[Path]:
    import pydicom.data

    root = Path(pydicom.data.DATA_ROOT, "test_files")
    skip = {".txt", ".json", ".dump", ".icc", ".gz", ".bz2", ".py"}
    return [f for f in sorted(root.rglob("*")) if f.is_file() and f.suffix not in skip and f.stat().st_size <= max_len]


def _image_seeds() -> list[bytes]:
    import numpy as np
    from PIL import Image

    import fuzz_ingest

    seeds = [s.data for s in fuzz_ingest._image_seeds()]
    rgb = (np.arange(24 * 32 * 3) % 251).astype(np.uint8).reshape(24, 32, 3)
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x010F] = "ACME Scanners"  # Make
    exif[0x0110] = "Model 9"  # Model
    exif[0x013B] = "Dr. Artist"  # Artist
    exif[0x9003] = "2024:01:02 03:04:05"  # DateTimeOriginal (in the Exif IFD in real files)
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), comment=b"patient: Doe^Jane")
    seeds.append(buf.getvalue())
    buf = io.BytesIO()
    img.save(buf, "TIFF", exif=exif, description="Aperio Image Library v12|AppMag = 20|Date = 01/02/24|User = x")
    seeds.append(buf.getvalue())
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    seeds.append(buf.getvalue())
    return seeds


def _multipart_seeds(dicoms: list[bytes], images: list[bytes]) -> list[bytes]:
    from medcloud.formats.multipart import closing, part_header

    seeds = []
    for i, (ctype, files) in enumerate(
        [
            ("multipart/related", dicoms[:2]),
            ("multipart/mixed", images[:3]),
            ("multipart/form-data", [b"x" * 10, b""]),
            ("multipart/related", [dicoms[2] if len(dicoms) > 2 else b"d", images[-1]]),
        ]
    ):
        boundary = f"b{i}-medcloud-fuzz"
        body = b"".join(
            part_header(boundary, "application/octet-stream", [("X-Medcloud-Filename", f"f{j}.bin")]) + f + b"\r\n"
            for j, f in enumerate(files)
        )
        body += closing(boundary)
        header = f'{ctype}; type="application/dicom"; boundary={boundary}'.encode()
        seeds.append(header + bytes([i * 37 % 256]) + b"\n" + body)
    return seeds


def write_corpus(target: str, corpus: Path, max_len: int) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    dicoms = [f.read_bytes() for f in _pydicom_files(max_len)]
    images = _image_seeds()
    seeds = {"dicom": dicoms + images, "scrub": images, "multipart": _multipart_seeds(dicoms, images)}[target]
    for s in seeds:
        s = s[:max_len]
        (corpus / hashlib.sha1(s).hexdigest()).write_bytes(s)  # noqa: S324 - a file name, not security
    return len(seeds)


# -- the worker (one target under libFuzzer) ---------------------------------------------------------
def worker(target: str, out: Path, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=list(INSTRUMENT[target])):
        import python_multipart.multipart  # noqa: F401

        import medcloud.deid.images
        import medcloud.formats.dicom
        import medcloud.formats.multipart
        import medcloud.formats.sniff
        import medcloud.hub.multipart
        import medcloud.ingest.dicom
        import medcloud.ingest.images
        import medcloud.ingest.metadata  # noqa: F401
    func = TARGET_FUNCS[target]
    crashes = out / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()

    def one(data: bytes) -> None:
        try:
            func(data)
        except Exception as exc:  # a crash: record it and go on (libFuzzer would stop at the first)
            sig = f"{type(exc).__name__}: {str(exc)[:120]}"
            key = hashlib.sha1(re.sub(r"\d+", "N", sig).encode()).hexdigest()[:12]  # noqa: S324
            with (out / "crashes.log").open("a") as log:
                log.write(json.dumps({"key": key, "error": sig}) + "\n")
            if key not in seen:
                seen.add(key)
                (crashes / f"crash-{key}").write_bytes(data)
                import traceback

                (crashes / f"crash-{key}.txt").write_text(traceback.format_exc())

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


# -- the driver --------------------------------------------------------------------------------------
def run_target(target: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = args.out / target
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{target}"
    seeds = write_corpus(target, corpus, args.max_len)
    done = 0
    hangs = oom = restarts = 0
    started = time.monotonic()
    log_tail = ""
    # libFuzzer stops its process at a hang (or out of memory): start it again for the runs left.
    while done < args.runs and restarts <= args.max_restarts:
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--worker", target, "--out", str(out), "--",
            f"-runs={args.runs - done}", f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}",
            f"-max_len={args.max_len}", f"-seed={args.seed + restarts}", f"-artifact_prefix={out}/",
            "-print_final_stats=1", str(corpus),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=work)
        text = proc.stdout + proc.stderr
        log_tail = text[-3000:]
        (out / f"libfuzzer-{restarts}.log").write_text(text[-200_000:])
        m = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
        ran = int(m.group(1)) if m else 0
        done += ran
        if "ALARM: working on the last Unit" in text or "==ERROR: libFuzzer: timeout" in text:
            hangs += 1
        elif "out-of-memory" in text:
            oom += 1
        elif proc.returncode != 0:
            restarts += 1
            if ran == 0:
                break
            continue
        else:
            break
        restarts += 1
    crash_lines = (out / "crashes.log").read_text().splitlines() if (out / "crashes.log").exists() else []
    kinds: dict[str, int] = {}
    for line in crash_lines:
        e = json.loads(line)
        kinds[e["error"]] = kinds.get(e["error"], 0) + 1
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log_tail)
    result = {
        "inputs": done,
        "crashes": len(crash_lines),
        "crash_kinds": kinds,
        "hangs": hangs,
        "oom": oom,
        "seconds": round(time.monotonic() - started, 1),
        "seeds": seeds,
        "corpus_after": sum(1 for _ in corpus.iterdir()),
        "coverage_edges": int(cov[-1][0]) if cov else None,
        "libfuzzer_restarts": restarts,
    }
    if done < args.runs:
        result["log_tail"] = log_tail[-1500:]
    return result


def replay(target: str, files: list[Path]) -> int:
    func = TARGET_FUNCS[target]
    bad = 0
    for f in files:
        t0 = time.monotonic()
        try:
            func(f.read_bytes())
            outcome = "ok"
        except Exception as exc:
            bad += 1
            outcome = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"file": str(f), "outcome": outcome[:300], "seconds": round(time.monotonic() - t0, 3)}))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    libfuzzer_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, libfuzzer_args = argv[:at], argv[at + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=100_000, help="inputs per target")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--timeout", type=int, default=5, help="seconds per input before it counts as a hang")
    ap.add_argument("--rss-limit-mb", type=int, default=2048)
    ap.add_argument("--max-len", type=int, default=65536)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-restarts", type=int, default=20)
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "atheris")
    ap.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    ap.add_argument("--replay", nargs="+", metavar="TARGET FILE", help="run files through one target")
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.out, libfuzzer_args)
        return 0
    if a.replay:
        return replay(a.replay[0], [Path(f) for f in a.replay[1:]])
    targets = [t for t in a.targets.split(",") if t]
    work = Path(tempfile.mkdtemp(prefix="medcloud-atheris-"))
    try:
        results = {t: run_target(t, a, work) for t in targets}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "tool": "atheris",
        "atheris_version": _version("atheris"),
        "runs_asked": a.runs,
        "timeout_s": a.timeout,
        "rss_limit_mb": a.rss_limit_mb,
        "max_len": a.max_len,
        "targets": results,
        "total_crashes": sum(r["crashes"] for r in results.values()),
        "total_hangs": sum(r["hangs"] for r in results.values()),
    }
    print(json.dumps(summary, indent=2))
    return 1 if summary["total_crashes"] or summary["total_hangs"] else 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
