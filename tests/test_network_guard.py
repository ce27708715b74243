"""The suite must fail loudly if anything tries to reach beyond loopback."""

import socket

import pytest

from conftest import NetworkAccessError


def test_connect_to_public_address_is_blocked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkAccessError):
        sock.connect(("93.184.216.34", 80))


def test_dns_lookup_of_public_host_is_blocked() -> None:
    with pytest.raises(NetworkAccessError):
        socket.getaddrinfo("api.binance.com", 443)


def test_loopback_connect_is_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect(server.getsockname())
