"""`medcloud fl ...`: key ceremony, aggregator, site, and one-machine simulation.

`medcloud` loads this module for every command, so commands import the federated code they run
(numpy, the `cryptography` primitives, Flower) when they run: `medcloud --help` stays as fast as
the rest of the CLI. Modes are whatever `he.registry` holds; no command names one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import typer

from medcloud.errors import ConfigError
from medcloud.fsio import write_atomic
from medcloud.vision.registry import register as registry_register

app = typer.Typer(no_args_is_help=True)

MODE_HELP = "HE scheme (`medcloud fl modes` lists them; plain is the unencrypted baseline)."
TASK_HELP = "breast-cancer (tabular), images (SYNTHETIC site-shifted images, small CNN), synthetic, mlp."
REGISTER_HELP = "images: hub data dir; the ServerApp registers model.onnx + card.json there (plain, threshold)."


@app.command("keygen")
def keygen_command(
    mode: str = typer.Option(..., "--mode", help="A mode with keys (`medcloud fl modes`): ckks, aes, threshold, ..."),
    site: str = typer.Option(..., "--site", help="This site's name."),
    site_dir: Path = typer.Option(..., "--site-dir", help="Secret folder; never leaves the site."),
    public: Path = typer.Option(..., "--public", help="Public folder the hub relays between sites."),
    lead: bool = typer.Option(False, "--lead", help="ckks, aes: this site generates and seals the shared key."),
    parties: str = typer.Option(
        "", "--parties", help="threshold: comma-separated sites, in key-chain order; ckks/aes --lead: every party."
    ),
    ceremony: str = typer.Option("", "--ceremony", help="ckks, aes: the ceremony id the lead told you; refuse others."),
    threshold: int = typer.Option(
        0, "--threshold", help="threshold: t-of-N (N/2 < t < N; default N-of-N, or what the first site published)."
    ),
    dropped: str = typer.Option("", "--dropped", help="threshold t-of-N: a site that dropped out after keygen."),
    recoverer: str = typer.Option("", "--recoverer", help="with --dropped: the surviving site that rebuilds its key."),
) -> None:
    """Run this site's next step of the key ceremony (idempotent; see docs/federated.md)."""
    from medcloud.federated.he.registry import KeygenStep, backend_spec
    from medcloud.federated.keys import KeyPaths, keygen_modes

    spec = backend_spec(mode)
    if spec.keygen is None:
        raise ConfigError(f"mode {mode!r} has no keys to generate; keygen is for {', '.join(keygen_modes())}")
    names = tuple(p.strip() for p in parties.split(",") if p.strip())
    step = KeygenStep(
        lead=lead, parties=names, threshold=threshold or None, dropped=dropped, recoverer=recoverer, ceremony=ceremony
    )
    done = spec.keygen(KeyPaths(site, site_dir, public), step)
    for line in done:
        typer.echo(line)


@app.command("trust")
def trust_command(
    site: str = typer.Option(..., "--site", help="This site's name."),
    site_dir: Path = typer.Option(..., "--site-dir", help="Secret folder; never leaves the site."),
    public: Path = typer.Option(..., "--public", help="Public folder the hub relays between sites."),
    party: str = typer.Option(..., "--party", help="The other site whose fingerprint you confirmed."),
    fingerprint: str = typer.Option(..., "--fingerprint", help="The code that site read to you on a second channel."),
) -> None:
    """Record another party's identity fingerprint, confirmed out of band (refused if the relayed one differs)."""
    from medcloud.federated.ceremony import trust
    from medcloud.federated.keys import KeyPaths

    code = trust(KeyPaths(site, site_dir, public), party, fingerprint)
    typer.echo(f"{party} trusted at {site} (fingerprint {code})")


@app.command("sync")
def sync_command(
    federation: str = typer.Option(..., "--federation", help="The federation (a project granted to this site)."),
    site: str = typer.Option(..., "--site", help="This site's name (as in its site token)."),
    public: Path = typer.Option(..., "--public", help="This site's copy of the public folder."),
    hub: str = typer.Option("", "--hub", envvar="MEDCLOUD_HUB_URL", help="Hub base URL."),
    token: str = typer.Option("", "--token", envvar="MEDCLOUD_TOKEN", help="This site's token (prefer --token-file)."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding this site's token."),
) -> None:
    """Exchange the public key folder through the hub: push this site's files, pull the others'."""
    from medcloud.federated.relay_client import RelayClient, sync_public_folder

    if token_file is not None:
        token = token_file.read_text().strip()
    client = RelayClient(hub, token)
    try:
        report = sync_public_folder(client, federation, site, public)
    finally:
        client.close()
    for name in report.pushed:
        typer.echo(f"pushed {name}")
    for name in report.pulled:
        typer.echo(f"pulled {name}")
    for line in report.skipped:
        typer.echo(f"skipped {line}", err=True)
    typer.echo(f"{len(report.pushed)} pushed, {len(report.pulled)} pulled, {report.unchanged} unchanged")


@app.command("modes")
def modes_command() -> None:
    """List the HE schemes (`--mode`): what each is for, who opens the sum, and whether it runs here."""
    from medcloud.federated.he.registry import backend_names, backend_spec

    opens = {"aggregator": "the aggregator (not encrypted)", "sites": "every site (one shared key)",
             "joint": "all key shares together"}  # fmt: skip
    for name in backend_names():
        try:
            spec = backend_spec(name)
        except ConfigError as exc:
            typer.echo(f"{name}: not available here ({exc})")
            continue
        why = spec.unavailable()
        where = f"not available here ({why})" if why else ("runs here" + (" (sidecar)" if spec.needs_sidecar() else ""))
        typer.echo(f"{name}: {spec.summary}")
        typer.echo(
            f"    sum opened by {opens[spec.decryption]}; keys: {'yes' if spec.keygen else 'none'}; "
            f"DeepProtect: {'yes' if spec.supports_deepprotect else 'no'}; {where}"
        )


@app.command("simulate")
def simulate_command(
    mode: str = typer.Option("ckks", "--mode", help=MODE_HELP),
    protocol: str = typer.Option("fedavg", "--protocol", help="fedavg or deepprotect"),
    sites: int = typer.Option(4, "--sites", min=1),
    rounds: int = typer.Option(5, "--rounds", min=1),
    workdir: Path = typer.Option(Path("fl-sim"), "--workdir"),
    dp_clip: float = typer.Option(0.0, "--dp-clip", help="Clip each site's update to this L2 norm."),
    dp_noise: float = typer.Option(0.0, "--dp-noise", help="Gaussian noise multiplier (std = noise x clip)."),
    hub: str = typer.Option("", "--hub", help="Hub URL for round audit events (else a JSONL file)."),
    token: str = typer.Option("", "--token", envvar="MEDCLOUD_TOKEN"),
    task: str = typer.Option("breast-cancer", "--task", help=TASK_HELP),
    images_train: int = typer.Option(160, "--images-train", min=1, help="images: SYNTHETIC training images per site."),
    images_test: int = typer.Option(80, "--images-test", min=1, help="images: SYNTHETIC held-out images per site."),
    register: Path | None = typer.Option(None, "--register", help=REGISTER_HELP),
    name: str = typer.Option("fl-shapes", "--name", help="images: registry name."),
    version: str = typer.Option("", "--version", help="images: registry version (default flower-MODE-rROUNDS)."),
) -> None:
    """All sites and the aggregator on this machine, in Flower's simulation engine."""
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.simulate import simulate

    settings = FLSettings(
        mode=mode, protocol=protocol, rounds=rounds, num_sites=sites, dp_clip=dp_clip, dp_noise=dp_noise, hub=hub,
        token=token, run_name=f"{task}-{protocol}-{mode}", task=task, images_train=images_train,
        images_test=images_test, register_dir=str(register.resolve()) if register else "", model_name=name,
        model_version=version,
    )  # fmt: skip
    card = simulate(settings, workdir)
    card.pop("rounds_audit", None)
    typer.echo(json.dumps(card, indent=2, default=str))


@app.command("train-images")
def train_images_command(
    mode: str = typer.Option(
        "ckks", "--mode", help="A mode with one key for every site, made in this process: plain, ckks, aes, ..."
    ),
    sites: int = typer.Option(4, "--sites", min=2),
    rounds: int = typer.Option(10, "--rounds", min=1),
    epochs: int = typer.Option(2, "--epochs", min=1, help="Local epochs per round."),
    n_train: int = typer.Option(160, "--n-train", min=8, help="SYNTHETIC training images per site."),
    n_test: int = typer.Option(80, "--n-test", min=4, help="SYNTHETIC test images per site."),
    dp_clip: float = typer.Option(0.0, "--dp-clip", help="Clip each site's update to this L2 norm."),
    dp_noise: float = typer.Option(0.0, "--dp-noise", help="Gaussian noise multiplier (std = noise x clip)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Single-site models (+ plain FedAvg)."),
    out: Path = typer.Option(Path("fl-images"), "--out", help="Model folder: model.onnx + card.json."),
    register: Path | None = typer.Option(None, "--register", help="Hub data dir: also register the model there."),
    name: str = typer.Option("fl-shapes", "--name", help="Registry name (not gram-stain: that is the detector)."),
    version: str = typer.Option("", "--version", help="Immutable registry version (default: MODE-rROUNDS)."),
) -> None:
    """FedAvg of a small CNN over SYNTHETIC site-shifted images; write (and register) the model and card."""
    from medcloud.federated.images import train_federated, write_model

    version = version or f"{mode}-r{rounds}"
    args = [
        f"--mode {mode}",
        f"--sites {sites}",
        f"--rounds {rounds}",
        f"--epochs {epochs}",
        f"--n-train {n_train}",
        f"--n-test {n_test}",
    ] + ([f"--dp-clip {dp_clip}", f"--dp-noise {dp_noise}"] if dp_clip and dp_noise else [])
    command = "medcloud fl train-images " + " ".join(args)
    result = train_federated(mode, sites, rounds, epochs, n_train, n_test, dp_clip, dp_noise, baselines, command)
    card = write_model(result, out, name, version)
    summary = {"model": str(out), "name": name, "version": version, "metrics": card["metrics"]}
    if register is not None:
        summary["registered"] = str(registry_register(out, register, name, version).path)
    typer.echo(json.dumps(summary, indent=2))


@app.command("open-model")
def open_model_command(
    model: Path = typer.Option(..., "--model", help="The Flower run's model folder (model.ciphertext...)."),
    site: str = typer.Option(..., "--site", help="This site's name."),
    site_dir: Path = typer.Option(..., "--site-dir", help="Secret folder holding this site's key."),
    public: Path = typer.Option(..., "--public", help="Public key folder."),
    out: Path = typer.Option(Path("fl-images"), "--out", help="Where to write model.onnx + card.json."),
    register: Path | None = typer.Option(None, "--register", help="Hub data dir: also register the model there."),
    name: str = typer.Option("fl-shapes", "--name", help="Registry name."),
    version: str = typer.Option("", "--version", help="Registry version (default flower-MODE-rROUNDS)."),
) -> None:
    """images, aes/ckks: decrypt the global model at a site and write (and register) model.onnx + card.json.

    The aggregator cannot read a model encrypted under the sites' key; opening it releases the model
    to whoever gets the output, so run it only for the final model the consortium agreed to publish."""
    from medcloud.federated.images import open_flower_model
    from medcloud.federated.keys import KeyPaths, site_backend

    try:
        run = json.loads((model / "model_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{model} has no readable model_card.json ({exc})") from exc
    mode = str(run.get("mode", ""))
    version = version or f"flower-{mode}-r{run.get('rounds')}"
    if register is not None:
        from medcloud.vision.registry import check_new_version

        check_new_version(register, name, version)
    backend = site_backend(mode, KeyPaths(site, site_dir, public))
    card = open_flower_model(model, backend, out, name, version)
    summary: dict[str, object] = {"model": str(out), "name": name, "version": version, "metrics": card["metrics"]}
    if register is not None:
        summary["registered"] = str(registry_register(out, register, name, version).path)
    typer.echo(json.dumps(summary, indent=2))


def _app_dir(workdir: Path, config: dict[str, object]) -> Path:
    """A minimal Flower app folder whose components are medcloud's installed apps."""
    app_dir = workdir / "flower-app"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "medcloud-fl"\nversion = "1.0.0"\ndescription = "medcloud federated learning"\n'
        'license = "Apache-2.0"\ndependencies = []\n\n'
        "[tool.hatch.build.targets.wheel]\npackages = []\n\n"
        '[tool.flwr.app]\npublisher = "medcloud"\n\n'
        "[tool.flwr.app.components]\n"
        'serverapp = "medcloud.federated.flower.apps:server_app"\n'
        'clientapp = "medcloud.federated.flower.apps:client_app"\n\n'
        "[tool.flwr.app.config]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
    )
    return app_dir


def _flower_env() -> dict[str, str]:
    """The environment for Flower's processes: they spawn `flower-superexec` and friends by name."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _flower_bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise ConfigError(f"{name} not found: install the `fl` extra")
    return found


@app.command("server")
def server_command(
    public: Path = typer.Option(..., "--public", help="Public key folder (no secret key in it)."),
    mode: str = typer.Option("ckks", "--mode", help=MODE_HELP),
    protocol: str = typer.Option("fedavg", "--protocol"),
    sites: int = typer.Option(..., "--sites", help="Sites to wait for each round."),
    rounds: int = typer.Option(5, "--rounds"),
    workdir: Path = typer.Option(Path("fl-server"), "--workdir"),
    certs: Path | None = typer.Option(None, "--certs", help="Folder with ca.crt, server.crt, server.key."),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS (testing only)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(9092, "--port", help="One HTTPS port: Fleet (sites), Control (flwr run), Runtime."),
    hub: str = typer.Option("", "--hub"),
    token: str = typer.Option("", "--token", envvar="MEDCLOUD_TOKEN"),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Sites report accuracy each round."),
    supernode_auth: bool | None = typer.Option(
        None,
        "--supernode-auth/--no-supernode-auth",
        help="Admit only SuperNodes whose key was enrolled (`medcloud fl enroll`). Default: on with TLS.",
    ),
    state_in_memory: bool = typer.Option(
        False,
        "--state-in-memory",
        help="Keep the SuperLink's state (enrolments, runs) in memory only; default: WORKDIR/superlink.db.",
    ),
    task: str = typer.Option("breast-cancer", "--task", help=TASK_HELP),
    images_train: int = typer.Option(160, "--images-train", min=1, help="images: SYNTHETIC training images per site."),
    images_test: int = typer.Option(80, "--images-test", min=1, help="images: SYNTHETIC held-out images per site."),
    register: Path | None = typer.Option(None, "--register", help=REGISTER_HELP),
    name: str = typer.Option("fl-shapes", "--name", help="images: registry name."),
    version: str = typer.Option("", "--version", help="images: registry version (default flower-MODE-rROUNDS)."),
) -> None:
    """Write the Flower app (aggregator settings baked in) and become the Flower SuperLink."""
    if not insecure and certs is None:
        raise ConfigError("give --certs DIR (ca.crt, server.crt, server.key) or --insecure")
    if supernode_auth and insecure:
        raise ConfigError("SuperNode authentication needs TLS (Flower refuses it with --insecure): give --certs")
    auth = not insecure if supernode_auth is None else supernode_auth
    audit = "" if hub else str((workdir / "audit.jsonl").resolve())
    from medcloud.federated.flower.settings import FLSettings

    chosen = FLSettings(
        mode=mode, protocol=protocol, num_sites=sites, rounds=rounds, public_dir=str(public.resolve()),
        out_dir=str((workdir / "model").resolve()), audit_file=audit, hub=hub, token=token, evaluate=evaluate,
        run_name=f"{task}-{protocol}-{mode}", task=task, images_train=images_train, images_test=images_test,
        register_dir=str(register.resolve()) if register else "", model_name=name, model_version=version,
    )  # fmt: skip
    if register is not None:
        from medcloud.vision.registry import check_new_version

        check_new_version(register, name, chosen.resolved_model_version())  # refused now, not after the run
    # Every setting goes into the app config, so `medcloud fl submit -c 'key=value'` may override any.
    settings = {k: v for k, v in chosen.to_config().items() if k != "keys-root"}
    app_dir = _app_dir(workdir, settings)
    link = [_flower_bin("flower-superlink"), "--host", host, "--port", str(port)]
    certs = certs or Path()
    link += ["--insecure"] if insecure else [
        "--ssl-ca-certfile", str((certs / "ca.crt").resolve()),
        "--ssl-certfile", str((certs / "server.crt").resolve()),
        "--ssl-keyfile", str((certs / "server.key").resolve()),
    ]  # fmt: skip
    link += ["--enable-supernode-auth"] if auth else []
    if not state_in_memory:
        # Enrolments and runs survive a restart of the SuperLink (Flower keeps them in SQLite).
        workdir.mkdir(parents=True, exist_ok=True)
        link += ["--database", str((workdir / "superlink.db").resolve())]
    typer.echo(" ".join(link))
    typer.echo(f"Flower app (settings in its pyproject.toml): {app_dir}")
    if auth:
        kept = "in memory: enroll again after a restart" if state_in_memory else f"kept in {workdir / 'superlink.db'}"
        typer.echo(
            f"SuperNode authentication on: only enrolled sites may join; enroll each site's public key ({kept})"
            " with: medcloud fl enroll "
            f"--workdir {workdir} --superlink {host}:{port} --ca CA --public-key SITE.pub"
        )
        typer.echo(
            "note: open-source Flower's Control API (enrollment, flwr run) shares this port WITHOUT a login: "
            "let only the hub's admin hosts reach /v1/control/ (firewall, reverse proxy)"
        )
    else:
        typer.echo("SuperNode authentication OFF: any process that reaches this port (and trusts the CA) may join")
    typer.echo(f"submit the run with: medcloud fl submit --workdir {workdir} --superlink {host}:{port} --ca CA")
    os.execve(link[0], link, _flower_env())  # noqa: S606 - becomes the SuperLink


@app.command("site")
def site_command(
    site: str = typer.Option(..., "--site"),
    site_index: int = typer.Option(
        ..., "--site-index", help="Which breast-cancer partition, or which SYNTHETIC image site (0-based)."
    ),
    site_dir: Path = typer.Option(..., "--site-dir", help="Secret key folder of this site."),
    public: Path = typer.Option(..., "--public"),
    superlink: str = typer.Option("127.0.0.1:9092", "--superlink"),
    ca: Path | None = typer.Option(None, "--ca", help="CA certificate that signed the SuperLink's."),
    insecure: bool = typer.Option(False, "--insecure"),
    port: int = typer.Option(9094, "--port", help="Local ClientApp runtime port."),
    auth_key: Path | None = typer.Option(
        None, "--auth-key", help="SuperNode private key (default: SITE_DIR/supernode-auth.key if present)."
    ),
    node_auth: bool = typer.Option(
        True, "--node-auth/--no-node-auth", help="Sign in with the SuperNode key (off: for a SuperLink without auth)."
    ),
) -> None:
    """Start a Flower SuperNode for this site; its ClientApp trains locally and encrypts."""
    from medcloud.federated.certs import SUPERNODE_KEY, check_private_key_file, supernode_fingerprint

    if not insecure and ca is None:
        raise ConfigError("give --ca FILE or --insecure")
    if auth_key is not None and (insecure or not node_auth):
        raise ConfigError("--auth-key needs TLS and --node-auth (a SuperLink with SuperNode auth refuses --insecure)")
    if auth_key is None and node_auth and not insecure and (site_dir / SUPERNODE_KEY).is_file():
        auth_key = site_dir / SUPERNODE_KEY
    node_config = (
        f'site="{site}" site-index={site_index} site-dir="{site_dir.resolve()}" public-dir="{public.resolve()}"'
    )
    cmd = [_flower_bin("flower-supernode"), "--superlink", superlink, "--node-config", node_config]
    cmd += ["--port", str(port)]
    cmd += ["--insecure"] if insecure else ["--root-certificates", str(Path(str(ca)).resolve())]
    if auth_key is not None:
        fingerprint = supernode_fingerprint(check_private_key_file(auth_key).public_key())
        cmd += ["--auth-supernode-private-key", str(auth_key.resolve())]
        typer.echo(
            f"SuperNode key {auth_key} ({fingerprint}): the SuperLink admits this node only once enrolled "
            "(--no-node-auth for a SuperLink without SuperNode authentication)"
        )
    else:
        typer.echo("no SuperNode key: this node can join only a SuperLink without SuperNode authentication")
    typer.echo(" ".join(cmd))
    os.execve(cmd[0], cmd, _flower_env())  # noqa: S606 - becomes the SuperNode


def write_flwr_connection(flwr_home: Path, superlink: str, ca: Path | None) -> Path:
    """The `flwr` CLI's connection file ($FLWR_HOME/config.toml) naming this SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", 'default = "medcloud"', "", "[superlink.medcloud]", f"address = {json.dumps(superlink)}"]
    lines.append(f"root-certificates = {json.dumps(str(ca.resolve()))}" if ca else "insecure = true")
    path = flwr_home / "config.toml"
    # Written whole: `flwr` commands started side by side (enrollments) never read half a file.
    write_atomic(path, ("\n".join(lines) + "\n").encode(), mode=0o644)
    return path


@app.command("submit")
def submit_command(
    workdir: Path = typer.Option(Path("fl-server"), "--workdir", help="The `medcloud fl server` work folder."),
    superlink: str = typer.Option("127.0.0.1:9092", "--superlink", help="SuperLink host:port (HTTPS)."),
    ca: Path | None = typer.Option(None, "--ca", help="CA certificate that signed the SuperLink's."),
    insecure: bool = typer.Option(False, "--insecure"),
    run_config: list[str] = typer.Option([], "--run-config", "-c", help="Overrides, e.g. 'rounds=3 evaluate=false'."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Stream the run's log until it ends."),
) -> None:
    """Submit the Flower app that `medcloud fl server` wrote to its SuperLink (`flwr run`)."""
    if not insecure and ca is None:
        raise ConfigError("give --ca FILE or --insecure")
    app_dir = workdir / "flower-app"
    if not (app_dir / "pyproject.toml").is_file():
        raise ConfigError(f"no Flower app in {app_dir}: run `medcloud fl server --workdir {workdir}` first")
    env = _flower_env()
    env.setdefault("FLWR_HOME", str((workdir / "flwr-home").resolve()))
    write_flwr_connection(Path(env["FLWR_HOME"]), superlink, None if insecure else ca)
    cmd = [_flower_bin("flwr"), "run", str(app_dir.resolve()), "medcloud"]
    for override in run_config:
        cmd += ["--run-config", override]
    cmd += ["--stream"] if wait else []
    typer.echo(" ".join(cmd))
    os.execve(cmd[0], cmd, env)  # noqa: S606 - becomes `flwr run`


@app.command("site-key")
def site_key_command(
    site: str = typer.Option(..., "--site", help="This site's name (recorded in the public key's comment)."),
    site_dir: Path = typer.Option(..., "--site-dir", help="Secret folder; the private key never leaves it."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the public key for the hub operator (default: SITE_DIR/supernode-auth.pub)."
    ),
    rotate: bool = typer.Option(False, "--rotate", help="Replace an existing key (then enroll the new one)."),
) -> None:
    """Make this site's SuperNode key pair (ECDSA P-384, OpenSSH); print the public key's path."""
    from medcloud.federated.certs import write_supernode_key

    key_path, pub_path, fingerprint, created = write_supernode_key(site_dir, site, out, rotate)
    typer.echo(f"{'new' if created else 'existing'} SuperNode key (0600, stays here): {key_path}")
    typer.echo(f"fingerprint: {fingerprint}  (read it to the hub operator over a second channel)")
    typer.echo(f"public key for enrollment: {pub_path}")
    if created and rotate:
        typer.echo("rotated: the hub must enroll the new key (and `flwr supernode unregister` the old node)")


@app.command("enroll")
def enroll_command(
    public_key: Path = typer.Option(..., "--public-key", help="A site's public key file (from `fl site-key`)."),
    workdir: Path = typer.Option(Path("fl-server"), "--workdir", help="The `medcloud fl server` work folder."),
    superlink: str = typer.Option("127.0.0.1:9092", "--superlink", help="SuperLink host:port (HTTPS)."),
    ca: Path = typer.Option(..., "--ca", help="CA certificate that signed the SuperLink's (auth needs TLS)."),
    name: str = typer.Option("", "--name", help="Node name on the SuperLink (default: the site in the key's comment)."),
) -> None:
    """Register a site's SuperNode public key with the SuperLink (`flwr supernode register`)."""
    from medcloud.federated.certs import read_supernode_public_key

    fingerprint, site = read_supernode_public_key(public_key)
    name = name or site or ""
    env = _flower_env()
    env.setdefault("FLWR_HOME", str((workdir / "flwr-home").resolve()))
    write_flwr_connection(Path(env["FLWR_HOME"]), superlink, ca)
    cmd = [_flower_bin("flwr"), "supernode", "register", str(public_key.resolve()), "medcloud"]
    cmd += ["--name", name] if name else []
    typer.echo(f"enrolling {name or 'a SuperNode'}: {fingerprint} (must match what the site printed)")
    typer.echo(" ".join(cmd))
    os.execve(cmd[0], cmd, env)  # noqa: S606 - becomes `flwr supernode register`
