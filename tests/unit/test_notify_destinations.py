"""Where notifications may go (server-side request forgery): the allowed destinations, checked
when a subscription is made and again when the sender connects."""

from __future__ import annotations

import ipaddress

import pytest

from partage.notify.channels import Outgoing, Transport
from partage.notify.destinations import DEFAULT, DestinationRefused, Destinations
from tests.notify_support import Endpoint

MESSAGE = Outgoing(b"<x/>", "application/soap+xml")


@pytest.mark.parametrize("text", ["public,nonsense entry", "10.0.0.0/33", "*.", "", " , ", "exa_mple.org"])
def test_bad_settings_are_refused_naming_the_entry(text):
    with pytest.raises(ValueError):
        Destinations.parse(text)


@pytest.mark.parametrize(("setting", "address", "allowed"), [
    (DEFAULT, "127.0.0.1", True), (DEFAULT, "10.1.2.3", True), (DEFAULT, "100.64.0.1", True),
    (DEFAULT, "93.184.216.34", True), (DEFAULT, "::1", True),
    (DEFAULT, "169.254.169.254", False),            # cloud metadata
    (DEFAULT, "fe80::1", False), (DEFAULT, "0.0.0.0", False), (DEFAULT, "224.0.0.1", False),
    (DEFAULT, "255.255.255.255", False), (DEFAULT, "240.0.0.1", False),
    (DEFAULT, "::ffff:169.254.169.254", False),      # IPv4-mapped: judged as the IPv4 address
    ("public", "127.0.0.1", False), ("public", "10.1.2.3", False), ("public", "::ffff:127.0.0.1", False),
    ("public", "93.184.216.34", True),
    ("10.20.0.0/16", "10.20.3.4", True), ("10.20.0.0/16", "10.21.3.4", False), ("10.20.0.0/16", "8.8.8.8", False),
    ("169.254.10.0/24", "169.254.10.9", True),       # listed as a network: the operator's choice
    ("private", "192.168.1.1", True), ("private", "127.0.0.1", False),
])
def test_addresses(setting, address, allowed):
    assert Destinations.parse(setting).allows(ipaddress.ip_address(address)) is allowed


@pytest.mark.parametrize(("setting", "url", "usable"), [
    (DEFAULT, "http://127.0.0.1:8080/notify", True),
    (DEFAULT, "http://169.254.169.254/latest/meta-data/", False),
    (DEFAULT, "http://[fe80::1]/x", False),
    (DEFAULT, "file:///etc/passwd", False), (DEFAULT, "gopher://127.0.0.1:25/", False),
    (DEFAULT, "http://127.0.0.1:99999/x", False),
    ("public", "http://localhost:8080/x", False),    # the name resolves to the loopback
    ("public", "http://[::1]:8080/x", False),
    ("localhost", "http://localhost:8080/x", True),  # trusted by name
    ("*.localdomain,public", "http://127.0.0.1/x", False),
])
def test_endpoints_under_a_setting(setting, url, usable):
    assert (Destinations.parse(setting).url_problem(url) == "") is usable


def test_every_address_of_a_name_must_be_allowed():
    with pytest.raises(DestinationRefused):
        Destinations.parse("public").addresses("localhost", 80)
    assert Destinations.parse("loopback").addresses("127.0.0.1", 80) == ["127.0.0.1"]


def test_the_sender_connects_only_to_allowed_destinations():
    """Checked again at connect time: a name that resolves elsewhere since (DNS rebinding), or a
    setting narrowed since the subscription, sends nothing, and retrying cannot help."""
    with Endpoint() as endpoint:
        refused = Transport(Destinations.parse("public"), 5).post(endpoint.url, MESSAGE)
        by_name = Transport(Destinations.parse("public"), 5).post(endpoint.url.replace("127.0.0.1", "localhost"),
                                                                  MESSAGE)
        assert endpoint.received == []
        assert (refused.ok, refused.permanent) == (False, True) and "not an allowed" in refused.detail
        assert (by_name.ok, by_name.permanent) == (False, True)
        allowed = Transport(Destinations.parse("loopback"), 5).post(endpoint.url, MESSAGE)
        assert allowed.ok and len(endpoint.received) == 1


def test_redirects_are_not_followed_and_the_answer_is_not_read():
    with Endpoint(status=307) as endpoint:
        result = Transport(Destinations.parse(DEFAULT), 5).post(endpoint.url, MESSAGE)
    assert (result.ok, result.status, result.permanent) == (False, 307, False)
