"""Accept negotiation: served types win, unservable ones are 406, malformed headers are 400."""

from __future__ import annotations

import pytest

from medcloud.dicomweb.media import NotAcceptable, Offer, negotiate, parse_accept, parse_media_type
from medcloud.errors import InvalidInput

DICOM = Offer("multipart/related", "application/dicom", frozenset({"1.2.840.10008.1.2.1"}))
JSON = [Offer("application/dicom+json"), Offer("application/json")]


def test_quoted_and_unquoted_parameters_are_the_same() -> None:
    a = parse_media_type('multipart/related; type="application/octet-stream"; transfer-syntax=*')
    b = parse_media_type("multipart/related; type=application/octet-stream; transfer-syntax=*")
    assert a == b and a.params == {"type": "application/octet-stream", "transfer-syntax": "*"}
    assert parse_media_type('multipart/related; boundary="a;b,c"').params["boundary"] == "a;b,c"


def test_highest_q_then_client_order_wins() -> None:
    offer, _ = negotiate(parse_accept("application/json;q=0.5, application/dicom+json;q=0.9"), JSON, what="x")
    assert offer.media_type == "application/dicom+json"
    offer, _ = negotiate(parse_accept("application/json, application/dicom+json"), JSON, what="x")
    assert offer.media_type == "application/json"
    offer, _ = negotiate(parse_accept(None), JSON, what="x")
    assert offer.media_type == "application/dicom+json"


def test_ohif_metadata_list_picks_the_json_it_can_serve() -> None:
    accept = parse_accept("application/dicom+json, multipart/related; type=application/octet-stream; transfer-syntax=*")
    assert negotiate(accept, JSON, what="metadata")[0].media_type == "application/dicom+json"


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
        'multipart/related; type="image/jpeg"',
        "application/dicom+json",
        "multipart/related; type=application/dicom; q=0",
    ],
)
def test_unservable_is_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as err:
        negotiate(parse_accept(accept), [DICOM], what="a retrieve")
    assert err.value.status == 406 and "application/dicom" in err.value.detail


@pytest.mark.parametrize(
    "header",
    ["text", "a/b/c", "multipart/related; type", 'multipart/related; type="x', "x/y; q=1.5", "x/y; q=abc", ",", "/"],
)
def test_malformed_is_invalid_input(header: str) -> None:
    with pytest.raises(InvalidInput):
        negotiate(parse_accept(header), [DICOM], what="a retrieve")
