"""`gssproxy-py-ctl pin set|clear`: a token PIN into (or out of) the kernel keyring.

The design is 389 Directory Server's: the PIN is asked for once (through
`systemd-ask-password` when it exists, which reaches a console or a
password agent even from a unit's `ExecStartPre`; else the terminal; with
`--stdin`, one line of standard input, for scripts) and never given as an
argument, and it is stored as a `user` key that the daemon reads with
`pkcs11_pin = keyring:DESCRIPTION` (`pkcs11.keyring`). It is stored in
root's user keyring (`@u`) by default, which a unit with
`KeyringMode=shared` links into the daemon's session keyring; `--keyring
session` stores it in the caller's session keyring instead.

The description names the service and, inside a container, the container
(`gssproxy-py:CONTAINER:SERVICE`, else `gssproxy-py:SERVICE`), so daemons
in several containers that share the host's kernel keyrings do not read
each other's PINs. A service whose `pkcs11_pin` names a keyring description
uses that one; `pin set` for a service with another PIN source refuses and
prints the line to configure.

The PIN is held in a `bytearray` that is overwritten once stored; it is
never printed or logged.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import shutil
import subprocess
import sys

from gssproxy_py.config.load import DEFAULT_SOCKET, load_config
from gssproxy_py.config.model import PinSourceKind
from gssproxy_py.errors import ConfigError
from gssproxy_py.pkcs11.keyring import (
    KEY_SPEC_SESSION_KEYRING,
    KEY_SPEC_USER_KEYRING,
    KeyringError,
    add_user_key,
    find_user_key,
    unlink_key,
)

PROG = "gssproxy-py-ctl"
PREFIX = "gssproxy-py"
KEYRINGS = {"user": KEY_SPEC_USER_KEYRING, "session": KEY_SPEC_SESSION_KEYRING}
_NAME = re.compile(r'^name="?([^"\n]+)"?$', re.M)


def container_name(
    environ: dict[str, str] | None = None,
    containerenv: str = "/run/.containerenv",
    dockerenv: str = "/.dockerenv",
) -> str | None:
    """The container we run in (its name, else the host name), or None on a host."""
    env = os.environ if environ is None else environ
    in_container = bool(env.get("container")) or os.path.exists(dockerenv)
    try:
        with open(containerenv, encoding="utf-8") as f:
            text = f.read()
        in_container = True
        if m := _NAME.search(text):
            return m.group(1)
    except OSError:
        pass
    if not in_container:
        return None
    return os.uname().nodename


def default_description(service: str, container: str | None) -> str:
    """`gssproxy-py:[CONTAINER:]SERVICE`."""
    return f"{PREFIX}:{container}:{service}" if container else f"{PREFIX}:{service}"


def description_for(args: argparse.Namespace) -> str:
    """The key description the service's daemon reads (see the module docstring)."""
    wanted = default_description(args.service, container_name())
    try:
        config = load_config(
            args.config, args.configdir, default_socket=args.socket or DEFAULT_SOCKET
        )
    except ConfigError:
        if args.config or args.configdir:
            raise
        return wanted  # no configuration here: the conventional name
    service = config.service(args.service)
    if service is None:
        raise ConfigError(f"no service named {args.service!r} in {', '.join(config.files)}")
    pin = service.pkcs11_pin
    if pin is not None and pin.kind is PinSourceKind.KEYRING:
        return pin.location
    raise ConfigError(
        f"service {args.service!r} does not read its PIN from the keyring; "
        f"add to [service/{args.service}]: pkcs11_pin = keyring:{wanted}",
        file=service.file,
        line=service.line,
    )


def _ask(prompt: str, use_stdin: bool) -> bytearray:
    if use_stdin:
        line = sys.stdin.buffer.readline()
        return bytearray(line.rstrip(b"\r\n"))
    agent = shutil.which("systemd-ask-password")
    if agent is not None:
        done = subprocess.run([agent, "--timeout=0", prompt], stdout=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise OSError("systemd-ask-password did not give a PIN")
        return bytearray(done.stdout.rstrip(b"\n"))
    return bytearray(getpass.getpass(prompt + " ").encode("utf-8"))


def cmd_pin(args: argparse.Namespace) -> int:
    description = description_for(args)
    keyring = KEYRINGS[args.keyring]
    try:
        existing = find_user_key(description, keyring)
        if args.action == "clear":
            if existing is None:
                print(f"no key {description!r} in the {args.keyring} keyring")
                return 0
            unlink_key(existing, keyring)
            print(f"removed key {description!r} from the {args.keyring} keyring")
            return 0
        if existing is not None and args.if_missing:
            return 0
        pin = _ask(f"PIN for the token of service {args.service}:", args.stdin)
        try:
            if not pin:
                print(f"{PROG}: empty PIN; nothing stored", file=sys.stderr)
                return 1
            add_user_key(description, bytes(pin), keyring)
        finally:
            pin[:] = bytes(len(pin))
    except KeyringError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    print(f"stored key {description!r} in the {args.keyring} keyring")
    return 0


def add_pin_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pin = sub.add_parser("pin", help="store or remove a token PIN in the kernel keyring")
    actions = pin.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("set", "ask for the PIN and store it"), ("clear", "remove it")):
        p = actions.add_parser(action, help=text)
        p.add_argument("--service", required=True, help="the service whose token it unlocks")
        p.add_argument("-c", "--config", metavar="FILE", help="main configuration file")
        p.add_argument("-C", "--configdir", metavar="DIR", help="configuration directory")
        p.add_argument("-s", "--socket", metavar="PATH", help="the daemon's default socket")
        p.add_argument(
            "--keyring",
            choices=sorted(KEYRINGS),
            default="user",
            help="root's user keyring (default; a KeyringMode=shared unit sees it) "
            "or this session's",
        )
        if action == "set":
            p.add_argument(
                "--stdin", action="store_true", help="read the PIN as one line of standard input"
            )
            p.add_argument(
                "--if-missing",
                action="store_true",
                help="do nothing if the key is there (for ExecStartPre: ask once after boot)",
            )
