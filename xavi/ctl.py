"""``xavi ctl``: the client of the agent's control socket.

It sends one request frame, reads one response frame and prints the result
as tables (the default) or as the response's JSON (``--json``, for scripts).

Exit codes (also in the README):

- 0: the command succeeded.
- 1: the agent returned an error (printed on stderr).
- 2: invalid command line.
- 3: no agent is listening on the socket.
- 4: permission denied by the socket's file mode or by the agent.
- 5: no valid answer: timed out, or the reply was not a valid frame.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

from xavi.ctl_output import render
from xavi.protocol.control_frames import (
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    FrameError,
    read_frame,
    write_frame,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_PERMISSION = 4
EXIT_NO_ANSWER = 5

DEFAULT_SOCKET = "/run/xavi/xavi.sock"
"""The agent's default (:data:`xavi.actors.control_socket.DEFAULT_SOCKET`), repeated so
that the client does not import the agent's actors."""
DEFAULT_TIMEOUT = 15.0
RESTART_TIMEOUT = 90.0
"""``restart`` waits for Docker to stop and start the container."""


class CtlError(Exception):
    """The request failed or got no valid response; ``exit_code`` is one of the EXIT_ values."""

    def __init__(self, message: str, exit_code: int, code: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code


def call(path: str | os.PathLike[str], cmd: str, args: dict[str, Any] | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Send one request to the agent at ``path``; return its response map (``ok`` may be false)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise CtlError(f"no agent is listening on {os.fspath(path)}: is xavi running?",
                           EXIT_NOT_RUNNING, "not_running") from None
        except PermissionError:
            raise CtlError(f"permission denied on {os.fspath(path)}: run as root, as the "
                           "agent's user, or as a member of its --socket-group",
                           EXIT_PERMISSION, "permission_denied") from None
        except TimeoutError:
            raise CtlError(f"the agent on {os.fspath(path)} did not accept the connection "
                           f"within {timeout:g} s", EXIT_NO_ANSWER, "timeout") from None
        try:
            write_frame(conn, {"cmd": cmd, "args": args or {}}, MAX_REQUEST_BYTES)
            response = read_frame(conn, MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise CtlError(f"the agent did not respond to {cmd!r} within {timeout:g} s",
                           EXIT_NO_ANSWER, "timeout") from None
        except FrameError as exc:
            raise CtlError(f"the agent's reply is not valid: {exc}", EXIT_NO_ANSWER,
                           "bad_frame") from None
        except OSError as exc:
            raise CtlError(f"the connection to the agent failed: {exc.strerror or exc}",
                           EXIT_NO_ANSWER, "connection_failed") from None
    if response is None or not isinstance(response.get("ok"), bool):
        raise CtlError("the agent closed the connection without a valid reply",
                       EXIT_NO_ANSWER, "bad_frame")
    return response


# Command line -----------------------------------------------------------------


def _seconds(text: str) -> float:
    """Parse a positive, finite number of seconds for ``--timeout``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 3600")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``xavi ctl``."""
    parser = argparse.ArgumentParser(
        prog="xavi ctl", description="Query and control the running Xavi agent.")
    parser.add_argument("--socket", default=None,
                        help=f"control socket path (default $XAVI_SOCKET or {DEFAULT_SOCKET})")
    parser.add_argument("--json", action="store_true",
                        help="print the agent's response as JSON instead of tables")
    parser.add_argument("--timeout", type=_seconds, default=None,
                        help=f"seconds to wait for the response (default {DEFAULT_TIMEOUT:g}, "
                             f"restart {RESTART_TIMEOUT:g})")
    commands = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    commands.add_parser("status", help="node, actors and services with restarts and errors")
    commands.add_parser("members", help="gossip members with address, state and services")
    commands.add_parser("services", help="where this host finds each service")
    commands.add_parser("reload", help="read xavi.json again; fails if the file is invalid")
    restart = commands.add_parser("restart", help="restart a service's container")
    restart.add_argument("service")
    keys = commands.add_parser("keys", help="the gossip keyring: list, install, use, remove")
    keys.add_argument("op", choices=["list", "install", "use", "remove"])
    keys.add_argument("key", nargs="?",
                      help="base64 key (use/remove also take a fingerprint); '-' reads stdin")
    commands.add_parser("bundle", help="print an auth bundle for a new host (root only)")
    fault = commands.add_parser("fault", help="inject a fault (agent needs "
                                              "--enable-fault-injection)")
    fault.add_argument("kind", choices=["crash", "hang", "docker", "gossip"])
    fault.add_argument("target", help="actor (crash, hang), service (docker), drop|delay (gossip)")
    fault.add_argument("value", nargs="?",
                       help="seconds (hang), on|off (docker), percent (drop) or ms (delay)")
    return parser


def _usage(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)


def request_of(parser: argparse.ArgumentParser, options: argparse.Namespace,
               stdin: TextIO) -> tuple[str, dict[str, Any]]:
    """Return the command name and arguments that ``options`` ask for."""
    cmd = options.cmd
    if cmd == "restart":
        return cmd, {"service": options.service}
    if cmd == "keys":
        args: dict[str, Any] = {"op": options.op}
        if options.op != "list":
            if not options.key:
                _usage(parser, f"keys {options.op} needs a KEY ('-' reads it from stdin)")
            args["key"] = stdin.readline().strip() if options.key == "-" else options.key
        return cmd, args
    if cmd == "fault":
        return cmd, _fault_args(parser, options)
    return cmd, {}


def _fault_args(parser: argparse.ArgumentParser, options: argparse.Namespace) -> dict[str, Any]:
    kind, target, value = options.kind, options.target, options.value
    if kind == "crash":
        if value is not None:
            _usage(parser, "fault crash takes only ACTOR")
        return {"kind": kind, "actor": target}
    if value is None:
        _usage(parser, f"fault {kind} needs a value: fault hang ACTOR SECONDS, fault docker "
                       "SERVICE on|off, fault gossip drop PERCENT, fault gossip delay MS")
    if kind == "docker":
        if value not in ("on", "off"):
            _usage(parser, f"fault docker SERVICE takes on or off, not {value!r}")
        return {"kind": kind, "service": target, "enabled": value == "on"}
    try:
        number = float(value)
    except ValueError:
        _usage(parser, f"{value!r} is not a number")
    if kind == "hang":
        return {"kind": kind, "actor": target, "seconds": number}
    if target == "drop":
        return {"kind": kind, "drop_percent": number}
    if target == "delay":
        return {"kind": kind, "delay_ms": number}
    _usage(parser, f"fault gossip takes drop PERCENT or delay MS, not {target!r}")


def main(argv: list[str] | None = None, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run ``xavi ctl`` with ``argv`` (without the ``ctl`` word); return the exit code."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
        cmd, args = request_of(parser, options, stdin)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    path = options.socket or os.environ.get("XAVI_SOCKET", DEFAULT_SOCKET)
    timeout = options.timeout or (RESTART_TIMEOUT if cmd == "restart" else DEFAULT_TIMEOUT)
    try:
        response = call(Path(path), cmd, args, timeout)
    except CtlError as exc:
        if options.json:
            print(json.dumps({"ok": False, "error": str(exc), "code": exc.code}), file=stdout)
        else:
            print(f"xavi ctl: {exc}", file=stderr)
        return exc.exit_code
    if options.json:
        print(json.dumps(response, indent=2, sort_keys=True), file=stdout)
    elif response["ok"]:
        render(cmd, args, response.get("result"), stdout, stderr)
    else:
        print(f"xavi ctl: {response.get('error')}", file=stderr)
    if response["ok"]:
        return EXIT_OK
    return EXIT_PERMISSION if response.get("code") == "permission_denied" else EXIT_FAILED
