"""`glasschat serve`'s command line: loopback by default, a warning for any other address, one line for what cannot be."""

import socket

import pytest
from cli_helpers import assert_one_line_error, glasschat

from chat.api.server import host_warning, is_loopback
from chat.cli import parse_args


def test_loopback_is_the_default_and_only_another_address_is_warned_about():
    args = parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.queue, args.no_save) == ("127.0.0.1", 8080, None, 8, False)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host) and host_warning(host, None) is None, host
    open_warning = host_warning("0.0.0.0", None)
    assert "warning" in open_warning and "0.0.0.0" in open_warning and "anyone" in open_warning
    assert "--api-key" in host_warning("0.0.0.0", "sesame") and not is_loopback("192.168.1.5")


def test_a_port_in_use_is_one_line_said_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = glasschat("serve", "--port", str(port), "--no-save", timeout=60)
    assert_one_line_error(proc, f"Port {port}", "in use", "--port")


def test_the_app_with_serve_takes_the_servers_options_and_says_a_busy_port_before_it_starts(tmp_path):
    args = parse_args(["--serve", "--port", "9000", "--queue", "2"])
    assert (args.serve, args.host, args.port, args.queue) == (True, "127.0.0.1", 9000, 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = glasschat("--serve", "--port", str(port), "--db", str(tmp_path / "g.db"), timeout=60)
    assert_one_line_error(proc, f"Port {port}", "in use", "--port")
    assert "\x1b[" not in proc.stdout  # said before the app drew anything


@pytest.mark.parametrize(
    "flags,phrase",
    [(["--port", "70000"], "--port 70000"), (["--queue", "-1"], "--queue -1"), (["--port", "x"], "--port")],
)
def test_impossible_settings_are_one_line(flags, phrase):
    assert_one_line_error(glasschat("serve", *flags, "--no-save", timeout=60), phrase)
