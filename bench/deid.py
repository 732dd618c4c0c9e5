"""De-identification benchmark: files per CPU-second and identifier survivors, medcloud vs dicognito.

    .venv/bin/python bench/deid.py [--n 2000] [--corpus DIR] [--no-dicognito]

Both tools get the same in-memory files in the same run (disk I/O is left out of both) and are timed
with `time.process_time()`. A pydicom read+write pass is timed too, as the floor any
Dataset-based tool pays. Survivors: planted identifying values found anywhere in the output of the
identifier-rich file (see bench/corpus.py).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import corpus


def _rate(files: list[bytes], fn: Callable[[bytes], bytes], repeat: int = 1) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for data in files:
            fn(data)
        best = min(best, time.process_time() - t0)
    return len(files) / best, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of corpus files (default 2000)")
    parser.add_argument("--corpus", type=Path, help="reuse (or create) the corpus in this folder")
    parser.add_argument("--no-dicognito", action="store_true", help="skip the dicognito comparison")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    import pydicom

    from medcloud.deid import Deidentifier, DeidOptions, SiteKey

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.corpus or Path(tmp) / "corpus"
        paths = sorted(folder.rglob("*.dcm")) if folder.exists() else []
        if len(paths) < args.n:
            paths = corpus.make_corpus(folder, args.n)
        files = [p.read_bytes() for p in paths[: args.n]]
        rich = corpus.make_identifier_rich_file(Path(tmp)).read_bytes()

    deid = Deidentifier(SiteKey(bytes(range(32))), DeidOptions())
    deid.deidentify_bytes(files[0], "warm.dcm")  # table load and imports are not per-file costs
    medcloud_rate, medcloud_cpu = _rate(files, lambda d: deid.deidentify_bytes(d, "x.dcm").data)
    medcloud_survivors = corpus.planted_survivors(deid.deidentify_bytes(rich, "rich.dcm").data)

    def pydicom_roundtrip(data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        out = io.BytesIO()
        ds.save_as(out)
        return out.getvalue()

    baseline_rate, _ = _rate(files, pydicom_roundtrip)
    result: dict[str, object] = {
        "files": len(files),
        "mean_file_kb": round(sum(map(len, files)) / len(files) / 1024, 1),
        "medcloud_files_per_cpu_s": round(medcloud_rate, 1),
        "medcloud_cpu_s": round(medcloud_cpu, 3),
        "medcloud_survivors": len(medcloud_survivors),
        "medcloud_survivor_fields": medcloud_survivors,
        "pydicom_read_write_files_per_cpu_s": round(baseline_rate, 1),
        "planted_values": len(corpus.RICH_VALUES),
    }
    if not args.no_dicognito:
        from dicognito.anonymizer import Anonymizer

        anonymizer = Anonymizer()

        def dicognito(data: bytes) -> bytes:
            ds = pydicom.dcmread(io.BytesIO(data))
            anonymizer.anonymize(ds)
            out = io.BytesIO()
            ds.save_as(out)
            return out.getvalue()

        dicognito_rate, _ = _rate(files, dicognito)
        dicognito_survivors = corpus.planted_survivors(dicognito(rich))
        result.update(
            dicognito_files_per_cpu_s=round(dicognito_rate, 1),
            dicognito_survivors=len(dicognito_survivors),
            dicognito_survivor_fields=dicognito_survivors,
            ratio_medcloud_over_dicognito=round(medcloud_rate / dicognito_rate, 2),
        )
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
