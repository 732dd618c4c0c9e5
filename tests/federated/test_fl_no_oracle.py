"""Nothing a site computes from a secret crosses the Flower boundary in an error message."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Message

from medcloud.federated.flower import apps
from medcloud.federated.he import HEError

APPS = Path(apps.__file__)


def test_site_errors_reach_the_server_without_detail(caplog: pytest.LogCaptureFixture, aes_site: object) -> None:
    secret = 1234567.25

    def handler(msg: Message, context: Context) -> Message:
        aes_site.encrypt(np.array([secret * 1e3]))  # type: ignore[attr-defined]  # out of range: raises
        raise AssertionError("unreachable")

    guarded = apps.no_oracle(handler)
    # The guard reads only the message type (for its log line); a real Message needs a running Flower task.
    msg = SimpleNamespace(metadata=SimpleNamespace(message_type="train"))
    with caplog.at_level(logging.ERROR, logger="medcloud.federated.site"), pytest.raises(apps.SiteFailed) as info:
        guarded(msg, None)  # type: ignore[arg-type]
    text = str(info.value)
    assert "1234567" not in text and "e+09" not in text and "range" not in text
    assert "incident" in text
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained detail
    # The detail is kept, in the site's own log, under the same incident id.
    incident = text.split("incident ")[1].split(";")[0]
    logged = "\n".join(r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records)
    assert incident in logged and isinstance(caplog.records[-1].exc_info[1], HEError)  # type: ignore[index]


def test_every_client_handler_is_guarded() -> None:
    """Each function registered with @app.train/@app.evaluate/@app.query also carries @no_oracle."""
    tree = ast.parse(APPS.read_text())
    handlers = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        names = [ast.unparse(d) for d in node.decorator_list]
        registered = any(n.startswith(("app.train", "app.evaluate", "app.query")) for n in names)
        if registered:
            handlers += 1
            assert "no_oracle" in names, f"{node.name} is registered with Flower but not wrapped in no_oracle"
    assert handlers >= 3
