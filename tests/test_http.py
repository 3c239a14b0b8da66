"""The guard both control APIs share against web pages in the user's browser."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from evsim.http import Refusal, check_not_a_web_page, is_loopback


@pytest.mark.parametrize("headers, loopback_only, refused", [
    ({"Host": "127.0.0.1:9002"}, True, False),                     # curl
    ({"Host": "localhost:9002", "Origin": "http://localhost:9002"}, True, False),  # same site
    ({"Host": "127.0.0.1:9002", "Origin": "http://evil.example"}, True, True),   # cross-site
    ({"Host": "evil.example:9002"}, True, True),                     # DNS rebinding
    ({"Host": "evil.example:9002"}, False, False),                   # bound to a real address
    ({"Host": "[::1]:9002"}, True, False),
])
def test_cross_site_and_rebound_requests_are_refused(headers, loopback_only, refused):
    request = make_mocked_request("POST", "/api/v1/connectors/1/plug-in", headers=headers)
    if refused:
        with pytest.raises(Refusal) as refusal:
            check_not_a_web_page(request, loopback_only)
        assert refusal.value.http_status == 403
    else:
        check_not_a_web_page(request, loopback_only)


def test_loopback_names():
    assert all(map(is_loopback, ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost")))
    assert not any(map(is_loopback, ("10.0.0.1", "example.com", "", None)))
