"""`corral serve` on a port it cannot have: a clear one-line error and exit code, never "internal error"."""

from __future__ import annotations

import socket

import pytest
from tests.cli.test_cli import one_line_error, run

from corral.errors import ConflictError, InvalidInputError
from corral.gateway.server import bind


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_port_out_of_range_is_a_usage_error(capsys, port):
    code, _, err = run(capsys, "serve", "--port", port)
    assert code == 2 and "Invalid value for '--port'" in err and "internal error" not in err


def test_a_port_in_use_says_so(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run(capsys, "serve", "--port", str(port))
        assert code == ConflictError.exit_code and "corral gateway on" not in out  # nothing started
        assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in one_line_error(err)
        with pytest.raises(ConflictError):
            bind("127.0.0.1", port)


def test_an_address_that_is_not_local_says_so():
    with pytest.raises(InvalidInputError, match="no such local address"):
        bind("203.0.113.7", 0)
    with pytest.raises(InvalidInputError, match="not a port number"):
        bind("127.0.0.1", 70000)
