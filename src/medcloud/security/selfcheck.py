"""`medcloud audit self-check`: this deployment against the checkable items of the MHLW guideline v6.0.

厚生労働省「医療情報システムの安全管理に関するガイドライン 第6.0版」asks for strong authentication
with a second factor, least privilege, access logs that say who did what, when, from where and with what
outcome and that cannot be altered unnoticed, a trusted time source, regular log review, encryption in
transit and at rest, mutual authentication, backups in generations, and emergency (break-glass) accounts.

Each item is evaluated against the running deployment (its settings, catalog and files), never against
documentation: PASS, FAIL or WARN, with the evidence read and the guideline section. Features built in
other modules are reached by their fixed names (`medcloud.security.envelope.at_rest_status`,
`medcloud.security.tls.tls_status`, `medcloud.security.backup.backup_status`, the OIDC, WebAuthn and
lockout settings); one that is not installed is a FAIL that says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import html
import importlib
import json
import shutil
import stat
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medcloud.config import Settings
    from medcloud.store import Catalog

__all__ = ["FAIL", "PASS", "WARN", "render_html", "run_self_check"]

PASS, FAIL, WARN = "PASS", "FAIL", "WARN"
GUIDELINE = "厚生労働省 医療情報システムの安全管理に関するガイドライン 第6.0版"
SYS = "システム運用編"
_MISSING = object()
PEOPLE_ROLES = ("researcher", "clinician", "auditor", "admin")


def _item(ident: str, title: str, section: str, status: str, summary: str, evidence: Any = None) -> dict[str, Any]:
    return {
        "id": ident,
        "title": title,
        "section": section,
        "status": status,
        "summary": summary,
        "evidence": evidence if evidence is not None else {},
    }


def _setting(settings: Settings, name: str) -> Any:
    return getattr(settings, name, _MISSING)


def _not_installed(ident: str, title: str, section: str, what: str) -> dict[str, Any]:
    return _item(ident, title, section, FAIL, f"feature not installed: {what}", {"missing": what})


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def _verdict(status: dict[str, Any]) -> str | None:
    """A status dict's own verdict: `status` PASS/FAIL/WARN, else a boolean `ok` (or `enabled`)."""
    v = status.get("status")
    if isinstance(v, str) and v.upper() in (PASS, FAIL, WARN):
        return v.upper()
    for key in ("ok", "enabled"):
        if isinstance(status.get(key), bool):
            return PASS if status[key] else FAIL
    return None


def _feature_status(module: str, func: str, settings: Settings) -> dict[str, Any] | None:
    """`module.func(settings)`, or None when that feature is not installed."""
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        return None
    result = fn(settings)
    return dict(result) if isinstance(result, dict) else {"value": repr(result)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- authentication (システム運用編 14) --------------------------------------------------------------

AUTH = f"{SYS} 14 (認証・認可に関する安全管理措置)"


def check_authentication(settings: Settings) -> dict[str, Any]:
    title = "Authentication strength (people through the hospital's identity provider)"
    issuer = _setting(settings, "oidc_issuer")
    if issuer is _MISSING:
        return _not_installed("authentication_strength", title, AUTH, "OpenID Connect sign-in (oidc_issuer)")
    evidence = {
        "oidc_issuer": issuer,
        "oidc_client_id": _setting(settings, "oidc_client_id"),
        "machine_tokens": "256-bit random secrets, stored as SHA-256",
    }
    if not issuer:
        return _item(
            "authentication_strength",
            title,
            AUTH,
            FAIL,
            "people sign in with bearer tokens only: set oidc_issuer to the hospital's IdP",
            evidence,
        )
    return _item("authentication_strength", title, AUTH, PASS, f"people sign in through {issuer}", evidence)


def check_second_factor(settings: Settings) -> dict[str, Any]:
    title = "Second factor (passkeys) for people and admin actions"
    mfa = _setting(settings, "mfa_required")
    if mfa is _MISSING:
        return _not_installed("second_factor", title, AUTH, "WebAuthn MFA (mfa_required)")
    evidence = {"mfa_required": mfa, "webauthn_rp_id": _setting(settings, "webauthn_rp_id")}
    if mfa is not True:
        return _item("second_factor", title, AUTH, FAIL, "mfa_required is off: one factor suffices", evidence)
    return _item("second_factor", title, AUTH, PASS, "a passkey is required before any session is usable", evidence)


def check_passkey_policy(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    title = "Password / passkey policy"
    rp = _setting(settings, "webauthn_rp_id")
    columns = catalog.column_names()
    passwords = sorted(c for c in columns if "password" in c.lower())
    evidence: dict[str, Any] = {"password_columns": passwords, "webauthn_rp_id": None if rp is _MISSING else rp}
    if passwords:
        return _item("password_policy", title, AUTH, FAIL, "the catalog stores passwords", evidence)
    if rp is _MISSING:
        return _not_installed("password_policy", title, AUTH, "WebAuthn passkeys (webauthn_rp_id)")
    if not rp:
        return _item("password_policy", title, AUTH, FAIL, "no passkey relying party configured", evidence)
    return _item(
        "password_policy",
        title,
        AUTH,
        PASS,
        "no passwords are stored; people use the IdP and passkeys bound to this relying party",
        evidence,
    )


def check_secret_hashing(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    title = "Stored secrets hashed, keys private"
    import re

    from medcloud.store.catalog import log_key_path, secrets_dir

    hashes = catalog.tokens.secret_digests()
    bad = sum(1 for h in hashes if not re.fullmatch(r"[0-9a-f]{64}", str(h)))
    folder = secrets_dir(settings.data_dir)
    loose: list[str] = []
    files = [folder / "audit.key", log_key_path(settings)]
    if folder.exists() and stat.S_IMODE(folder.stat().st_mode) & 0o077:
        loose.append(f"{folder} is mode {stat.S_IMODE(folder.stat().st_mode):o}")
    for f in files:
        if f.exists() and stat.S_IMODE(f.stat().st_mode) & 0o077:
            loose.append(f"{f} is mode {stat.S_IMODE(f.stat().st_mode):o}")
    evidence = {
        "tokens": len(hashes),
        "not_sha256_digests": bad,
        "key_files": [str(f) for f in files if f.exists()],
        "loose_permissions": loose,
    }
    if bad or loose:
        return _item(
            "stored_secret_hashing",
            title,
            AUTH,
            FAIL,
            f"{bad} token secret(s) not stored as digests; {len(loose)} key file(s) readable by others",
            evidence,
        )
    return _item(
        "stored_secret_hashing",
        title,
        AUTH,
        PASS,
        "token secrets are kept as SHA-256 digests of 256-bit secrets; key files are owner-only",
        evidence,
    )


def check_lockout(settings: Settings) -> dict[str, Any]:
    title = "Lockout after repeated failures"
    threshold, seconds = _setting(settings, "lockout_threshold"), _setting(settings, "lockout_seconds")
    if threshold is _MISSING or seconds is _MISSING:
        return _not_installed("lockout", title, AUTH, "lockout (lockout_threshold, lockout_seconds)")
    evidence = {"lockout_threshold": threshold, "lockout_seconds": seconds}
    if not (isinstance(threshold, int) and 1 <= threshold <= 10) or not (isinstance(seconds, int) and seconds >= 300):
        return _item(
            "lockout", title, AUTH, FAIL, "lockout must follow at most 10 failures and last 5 minutes or more", evidence
        )
    return _item("lockout", title, AUTH, PASS, f"{threshold} failures lock an account for {seconds} s", evidence)


def check_idle_timeout(settings: Settings) -> dict[str, Any]:
    title = "Session idle timeout"
    idle = _setting(settings, "session_idle_seconds")
    if idle is _MISSING:
        return _not_installed("idle_timeout", title, AUTH, "sessions (session_idle_seconds)")
    limit = settings.selfcheck_max_idle_seconds
    evidence = {
        "session_idle_seconds": idle,
        "session_max_seconds": _setting(settings, "session_max_seconds"),
        "limit": limit,
    }
    if not isinstance(idle, int) or not 0 < idle <= limit:
        return _item(
            "idle_timeout", title, AUTH, FAIL, f"idle sessions must end within {limit} s (set: {idle})", evidence
        )
    return _item("idle_timeout", title, AUTH, PASS, f"an idle session ends after {idle} s", evidence)


def check_least_privilege(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    title = "Least privilege (token lifetimes, administrator count)"
    from medcloud.security.tokens import _parse_scope

    now = datetime.now(timezone.utc)
    active = [
        t
        for t in catalog.tokens.list_all()
        if t["revoked_at"] is None and (t["expires_at"] is None or _aware(t["expires_at"]) > now)  # type: ignore[operator]
    ]
    glass = [t for t in active if _parse_scope(t.get("scope"))[2] is not None]
    people_forever = [t["id"] for t in active if t["role"] in PEOPLE_ROLES and t["expires_at"] is None]
    admins = [t["id"] for t in active if t["role"] == "admin" and t not in glass]
    machines_forever = [t["id"] for t in active if t["role"] == "site" and t["expires_at"] is None]
    evidence = {
        "active_tokens": len(active),
        "by_role": {r: sum(1 for t in active if t["role"] == r) for r in sorted({t["role"] for t in active})},
        "never_expiring_people_tokens": people_forever,
        "admin_tokens": admins,
        "max_admins": settings.selfcheck_max_admins,
        "open_break_glass_tokens": [t["id"] for t in glass],
        "never_expiring_site_tokens": machines_forever,
    }
    problems = []
    if people_forever:
        problems.append(f"{len(people_forever)} token(s) for people never expire")
    if len(admins) > settings.selfcheck_max_admins:
        problems.append(f"{len(admins)} active admin tokens (at most {settings.selfcheck_max_admins})")
    if problems:
        return _item("least_privilege", title, AUTH, FAIL, "; ".join(problems), evidence)
    if machines_forever:
        return _item(
            "least_privilege",
            title,
            AUTH,
            WARN,
            f"{len(machines_forever)} site token(s) never expire: rotate machine tokens",
            evidence,
        )
    return _item(
        "least_privilege",
        title,
        AUTH,
        PASS,
        "one role per token, deny by default, people's tokens expire, few administrators",
        evidence,
    )


# --- audit trail (システム運用編 17) ----------------------------------------------------------------

LOGS = f"{SYS} 17 (証跡のレビュー・システム監査)"


def check_access_log_content(catalog: Catalog) -> dict[str, Any]:
    title = "Access-log content: who, what, when, where, outcome"
    sample = catalog.audit.recent(1000)
    incomplete, no_address = [], []
    for ev in sample:
        try:
            datetime.fromisoformat(str(ev["ts"]))
            ok_ts = True
        except ValueError:
            ok_ts = False
        if not (ev["subject"] and ev["action"] and ev["resource"] and ev["outcome"] and ok_ts):
            incomplete.append(ev["seq"])
        subject = str(ev["subject"])
        remote = ":" in subject and not subject.startswith(("cli:", "hub:", "job:", "system"))
        if remote and not ev["client"]:
            no_address.append(ev["seq"])
    evidence = {
        "events_sampled": len(sample),
        "incomplete_events": incomplete[:50],
        "remote_events_without_address": no_address[:50],
        "fields": ["subject (who)", "action + resource (what)", "ts (when)", "client (where)", "outcome"],
    }
    section = f"{LOGS} ①"
    if not sample:
        return _item("access_log_content", title, section, WARN, "the audit log is empty: nothing to judge", evidence)
    if incomplete:
        return _item("access_log_content", title, section, FAIL, f"{len(incomplete)} event(s) lack a field", evidence)
    if no_address:
        return _item(
            "access_log_content",
            title,
            section,
            WARN,
            f"{len(no_address)} request event(s) lack the caller's address",
            evidence,
        )
    return _item(
        "access_log_content",
        title,
        section,
        PASS,
        f"the newest {len(sample)} events all say who, what, when, where and the outcome",
        evidence,
    )


def check_log_tamper_protection(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    title = "Log tamper protection (hash chain, keyed MACs, signed Merkle checkpoints)"
    section = f"{LOGS} ②"
    report = catalog.audit.verify()
    latest = catalog.audit.latest_checkpoint()
    evidence: dict[str, Any] = {
        "verify": report.as_dict(),
        "sealed": catalog.audit.seal is not None,
        "log_key": catalog.audit.log_key.log_id if catalog.audit.log_key else None,
        "latest_checkpoint": latest.as_dict() if latest else None,
    }
    if not report.ok:
        where = f" at event {report.first_bad_seq}" if report.first_bad_seq else ""
        return _item(
            "log_tamper_protection", title, section, FAIL, f"verification failed{where}: {report.reason}", evidence
        )
    if catalog.audit.seal is None or catalog.audit.log_key is None:
        return _item(
            "log_tamper_protection",
            title,
            section,
            FAIL,
            "the audit key or the log signing key is missing from the secrets folder",
            evidence,
        )
    if latest is None:
        return _item(
            "log_tamper_protection",
            title,
            section,
            WARN,
            "no signed checkpoint yet: run `medcloud audit checkpoint`",
            evidence,
        )
    behind = report.checked - latest.tree_size
    age = datetime.now(timezone.utc).timestamp() - latest.timestamp / 1000
    evidence["events_after_checkpoint"], evidence["checkpoint_age_seconds"] = behind, round(age)
    if behind > 0 and settings.audit_checkpoint_seconds and age > 2 * settings.audit_checkpoint_seconds:
        return _item(
            "log_tamper_protection",
            title,
            section,
            WARN,
            f"{behind} events are newer than the last checkpoint, which is {age:.0f} s old",
            evidence,
        )
    return _item(
        "log_tamper_protection",
        title,
        section,
        PASS,
        f"{report.checked} events verify; {report.checkpoints} signed checkpoint(s) match",
        evidence,
    )


def _adjtimex() -> dict[str, Any] | None:
    """The kernel clock state via adjtimex(2) with no change requested (modes = 0), or None."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes = 0 reads only
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    # TIME_ERROR (5): the clock is not synchronized; -1: the call failed.
    return {"adjtimex_state": state, "synchronized": state not in (-1, 5)}


def check_time_source() -> dict[str, Any]:
    title = "Trusted time source (NTP synchronized)"
    section = f"{LOGS} ③"
    evidence: dict[str, Any] = {}
    if shutil.which("timedatectl"):
        done = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        evidence["timedatectl"] = (done.stdout or done.stderr).strip()[:200]
        if done.returncode == 0 and done.stdout.strip() == "yes":
            return _item("time_source", title, section, PASS, "timedatectl: NTP synchronized", evidence)
    if shutil.which("chronyc"):
        done = subprocess.run(["chronyc", "-n", "tracking"], capture_output=True, text=True, timeout=5, check=False)
        evidence["chronyc"] = (done.stdout or done.stderr).strip()[:500]
        if done.returncode == 0 and "Leap status     : Normal" in done.stdout:
            return _item("time_source", title, section, PASS, "chrony is tracking a time source", evidence)
    kernel = _adjtimex()
    if kernel is not None:
        evidence["kernel"] = kernel
        if kernel["synchronized"]:
            return _item(
                "time_source", title, section, PASS, "the kernel clock is NTP-disciplined (adjtimex)", evidence
            )
    return _item(
        "time_source",
        title,
        section,
        WARN,
        "no evidence that the clock is synchronized (no timedatectl/chrony answer, kernel clock unsynced)",
        evidence,
    )


def check_log_review(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    title = "Regular review of the access log"
    section = f"{LOGS} ①"
    last = catalog.audit.last("audit.review")
    limit = settings.selfcheck_review_days
    if last is None:
        return _item(
            "log_review",
            title,
            section,
            FAIL,
            "no review recorded: run `medcloud audit review --note ...`",
            {"max_days": limit},
        )
    when = datetime.fromisoformat(str(last["ts"]))
    age = datetime.now(timezone.utc) - when
    evidence = {
        "last_review": last["ts"],
        "by": last["subject"],
        "event": last["seq"],
        "max_days": limit,
        "note": json.loads(last["detail"]).get("note"),
    }
    if age > timedelta(days=limit):
        return _item(
            "log_review", title, section, FAIL, f"the last review is {age.days} days old (at most {limit})", evidence
        )
    return _item("log_review", title, section, PASS, f"reviewed {last['ts']} by {last['subject']}", evidence)


# --- network, storage, continuity ----------------------------------------------------------------

NET = f"{SYS} (ネットワークに関する安全管理措置)"


def check_transit(settings: Settings) -> list[dict[str, Any]]:
    status = _feature_status("medcloud.security.tls", "tls_status", settings)
    t1, t2 = (
        "Encryption in transit (TLS 1.2+, recommended cipher suites)",
        "Mutual authentication (client certificates)",
    )
    if status is None:
        return [
            _not_installed("encryption_in_transit", t1, NET, "medcloud.security.tls.tls_status"),
            _not_installed("mutual_authentication", t2, NET, "medcloud.security.tls.tls_status"),
        ]
    evidence = _jsonable(status)
    verdict = _verdict(status)
    transit = _item(
        "encryption_in_transit",
        t1,
        NET,
        verdict or WARN,
        "as reported by tls_status" if verdict else "tls_status gave no verdict",
        evidence,
    )
    ca = _setting(settings, "tls_client_ca_file")
    mutual = next((status[k] for k in ("mtls", "mutual", "client_auth", "client_ca") if k in status), None)
    on = bool(mutual) if mutual is not None else bool(ca and ca is not _MISSING)
    m = _item(
        "mutual_authentication",
        t2,
        NET,
        PASS if on else FAIL,
        "client certificates are required" if on else "gateways are not asked for client certificates",
        {"tls_client_ca_file": None if ca is _MISSING else str(ca) if ca else None, "tls_status": evidence},
    )
    return [transit, m]


def _from_feature(ident: str, title: str, section: str, module: str, func: str, settings: Settings) -> dict[str, Any]:
    status = _feature_status(module, func, settings)
    if status is None:
        return _not_installed(ident, title, section, f"{module}.{func}")
    verdict = _verdict(status)
    summary = str(status.get("summary") or status.get("reason") or ("as reported by " + func))
    return _item(
        ident, title, section, verdict or WARN, summary if verdict else f"{func} gave no verdict", _jsonable(status)
    )


def check_at_rest(settings: Settings) -> dict[str, Any]:
    return _from_feature(
        "encryption_at_rest",
        "Encryption at rest (blob store, catalog, outbox; key outside the data folder)",
        f"{SYS} (情報の管理・暗号化)",
        "medcloud.security.envelope",
        "at_rest_status",
        settings,
    )


def check_backups(settings: Settings) -> dict[str, Any]:
    item = _from_feature(
        "backups",
        "Backups in generations, one offline",
        f"{SYS} (非常時の対応・バックアップ)",
        "medcloud.security.backup",
        "backup_status",
        settings,
    )
    gens = item["evidence"].get("generations")
    count = len(gens) if isinstance(gens, list) else gens if isinstance(gens, int) else None
    if item["status"] == PASS and count is not None and count < 1:
        item.update(status=FAIL, summary="no backup generation is present")
    return item


def check_break_glass(catalog: Catalog) -> dict[str, Any]:
    title = "Break-glass (emergency) accounts: sealed, time-limited, reviewed"
    section = f"{SYS} 14 (非常時の利用者アカウント) / 企画管理編 (非常時の対応)"
    from medcloud.security import breakglass

    accounts = breakglass.status(catalog)
    evidence = {
        "accounts": [
            {k: a[k] for k in ("name", "state", "opened_at", "reason", "reviewed_at", "needs_review")} for a in accounts
        ]
    }
    evidence = _jsonable(evidence)
    sealed = [a["name"] for a in accounts if a["state"] == "sealed"]
    unreviewed = [a["name"] for a in accounts if a["needs_review"] and a["state"] in ("closed", "revoked")]
    in_use = [a["name"] for a in accounts if a["state"] in ("open", "expired")]
    if unreviewed:
        return _item(
            "break_glass",
            title,
            section,
            FAIL,
            f"use of {', '.join(unreviewed)} not reviewed: `medcloud hub break-glass review`",
            evidence,
        )
    if not sealed:
        return _item(
            "break_glass",
            title,
            section,
            FAIL,
            "no sealed break-glass account: `medcloud hub break-glass create NAME`",
            evidence,
        )
    if in_use:
        return _item(
            "break_glass",
            title,
            section,
            WARN,
            f"in use now (or past its end, not closed): {', '.join(in_use)}",
            evidence,
        )
    return _item("break_glass", title, section, PASS, f"{len(sealed)} sealed account(s); every use reviewed", evidence)


def run_self_check(settings: Settings, catalog: Catalog | None = None) -> dict[str, Any]:
    """Evaluate every item; the report is JSON-ready. The catalog is opened read-only if not given."""
    import medcloud
    from medcloud.store import Catalog as _Catalog

    own = catalog is None
    cat = catalog or _Catalog.from_settings(settings, create_key=False)
    checks: list[Callable[[], dict[str, Any] | list[dict[str, Any]]]] = [
        lambda: check_authentication(settings),
        lambda: check_second_factor(settings),
        lambda: check_passkey_policy(settings, cat),
        lambda: check_secret_hashing(settings, cat),
        lambda: check_lockout(settings),
        lambda: check_idle_timeout(settings),
        lambda: check_least_privilege(settings, cat),
        lambda: check_access_log_content(cat),
        lambda: check_log_tamper_protection(settings, cat),
        check_time_source,
        lambda: check_log_review(settings, cat),
        lambda: check_transit(settings),
        lambda: check_at_rest(settings),
        lambda: check_backups(settings),
        lambda: check_break_glass(cat),
    ]
    items: list[dict[str, Any]] = []
    try:
        for check in checks:
            try:
                got = check()
            except Exception as exc:  # one broken check is a FAIL of that item, never a crash of the report
                got = _item(
                    getattr(check, "__name__", "check"),
                    "check could not run",
                    "-",
                    FAIL,
                    f"{type(exc).__name__}: {exc}",
                )
            items += got if isinstance(got, list) else [got]
    finally:
        if own:
            cat.dispose()
    summary = {s: sum(1 for i in items if i["status"] == s) for s in (PASS, WARN, FAIL)}
    return {
        "format": "medcloud-self-check/1",
        "guideline": GUIDELINE,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "deployment": {
            "data_dir": str(Path(settings.data_dir).resolve()),
            "version": medcloud.__version__,
            "database": settings.resolved_database_url.split(":", 1)[0],
        },
        "summary": summary,
        "ok": summary[FAIL] == 0,
        "items": _jsonable(items),
    }


_CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#111}table{border-collapse:collapse;width:100%}"
    "th,td{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}"
    "pre{white-space:pre-wrap;word-break:break-all;margin:0;font-size:12px;max-height:20em;overflow:auto}"
    ".PASS{background:#d9f2d9}.WARN{background:#fff3c4}.FAIL{background:#f8d0d0}td.s{font-weight:bold}"
)


def render_html(report: dict[str, Any], *, stylesheet: str | None = None) -> str:
    """The report as one self-contained HTML page (no external assets; every value escaped).

    With `stylesheet` (the hub's `/static/selfcheck.css`, the same rules) the page links its style
    instead of inlining it, so that it renders under the hub's strict CSP (`style-src 'self'`)."""
    e = html.escape
    if stylesheet is None:
        csp, style = "default-src 'none'; style-src 'unsafe-inline'", f"<style>{_CSS}</style>"
    else:
        csp, style = "default-src 'none'; style-src 'self'", f'<link rel="stylesheet" href="{e(stylesheet)}">'

    rows = "".join(
        f'<tr class="{e(i["status"])}"><td class="s">{e(i["status"])}</td><td>{e(i["title"])}<br><code>{e(i["id"])}'
        f"</code></td><td>{e(i['section'])}</td><td>{e(i['summary'])}</td>"
        f"<td><pre>{e(json.dumps(i['evidence'], ensure_ascii=False, indent=1))}</pre></td></tr>"
        for i in report["items"]
    )
    s = report["summary"]
    dep = report["deployment"]
    return (
        '<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<title>medcloud self-check</title>{style}</head><body>"
        f"<h1>medcloud self-check</h1><p>{e(report['guideline'])}</p>"
        f"<p>Generated {e(report['generated_at'])} for <code>{e(dep['data_dir'])}</code> (medcloud "
        f"{e(str(dep['version']))}, {e(dep['database'])}).</p>"
        f"<p><strong>{'PASS' if report['ok'] else 'FAIL'}</strong>: {s['PASS']} pass, {s['WARN']} warn, "
        f"{s['FAIL']} fail.</p><table><thead><tr><th>Status</th><th>Item</th><th>Guideline</th><th>Finding</th>"
        f"<th>Evidence</th></tr></thead><tbody>{rows}</tbody></table></body></html>"
    )
