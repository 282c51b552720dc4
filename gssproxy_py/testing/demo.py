"""`make run`: a throwaway realm, gssproxy-py in front of its keytab, and a real client.

What it shows: Debian's `gss-server` sample, running as an unprivileged user who
cannot read the keytab, accepts alice's Kerberos token through the interposer
plugin `proxymech.so` and this daemon; `gss-client` prints `Signature verified`.
Then it prints the environment to export to try your own client and follows
the daemon's log until Ctrl-C, which stops everything and deletes the realm.

`--once` does the same without waiting (the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gssproxy_py.testing.daemon import DaemonProcess, render_config, write_config
from gssproxy_py.testing.interposer import interposer_env
from gssproxy_py.testing.net import free_port, tcp_listening, wait_until
from gssproxy_py.testing.peer import ccache_env, peer_env
from gssproxy_py.testing.realm import standard_realm
from gssproxy_py.testing.users import ensure_test_users, is_root, popen_as


def _say(text: str = "") -> None:
    print(text, flush=True)


def _banner(text: str) -> None:
    _say()
    _say(f"== {text}")


def run(once: bool, daemon_program: str | None = None) -> int:
    if not is_root():
        _say("make run needs root: it creates a test user and a throwaway KDC.")
        return 2
    top = Path(tempfile.mkdtemp(prefix="gssproxy-py-demo-"))
    top.chmod(0o755)  # the unprivileged acceptor must reach mech.conf and krb5.conf
    daemon: DaemonProcess | None = None
    realm = None
    try:
        _banner("a throwaway MIT realm on loopback")
        realm = standard_realm(top / "realm")
        user = ensure_test_users()[0]
        _say(f"realm {realm.realm.realm}, KDC on 127.0.0.1:{realm.realm.port}")
        _say(f"service keytab {realm.service_keytab} (mode 0600, root): {user.name} cannot read it")

        _banner("gssproxy-py holding that keytab")
        sock = top / "gssproxy-py.sock"
        config = render_config(
            {
                "demo": {
                    "mechs": "krb5",
                    "socket": str(sock),
                    "cred_store": f"keytab:{realm.service_keytab}",
                    "cred_usage": "accept",
                    "euid": user.uid,
                }
            },
            global_options={"debug_level": 1, "state_dir": str(top / "state")},
        )
        conf_path = write_config(top / "gssproxy.conf", config)
        daemon = DaemonProcess(
            "py",
            conf_path,
            socket=top / "default.sock",
            confdir=top / "conf.d",
            log_path=top / "gssproxy-py.log",
            env=realm.env(),
            program=[daemon_program] if daemon_program else (),
        )
        daemon.start()
        _say(f"listening on {sock}; log: {daemon.log_path}")

        _banner(f"gss-server as {user.name}, through proxymech.so; gss-client as alice")
        client_env = interposer_env(sock, top)
        port = free_port()
        server = popen_as(
            user,
            ["gss-server", "-port", str(port), "-once", realm.host_service],
            peer_env(realm.env(), client_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            if not wait_until(lambda: tcp_listening(port), timeout=10):
                raise RuntimeError("gss-server did not start listening")
            client = subprocess.run(
                [
                    "gss-client",
                    "-port",
                    str(port),
                    "localhost",
                    realm.host_service,
                    "hello through gssproxy-py",
                ],
                env=peer_env(
                    {"PATH": "/usr/bin:/bin"}, realm.env(), ccache_env(realm.alice_ccache)
                ),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            server_out, _ = server.communicate(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
        _say("gss-server:")
        for line in server_out.splitlines():
            _say(f"  {line}")
        _say("gss-client:")
        for line in (client.stdout + client.stderr).splitlines():
            _say(f"  {line}")
        ok = "Signature verified" in client.stdout
        _say()
        _say("RESULT: " + ("the token was accepted through gssproxy-py" if ok else "FAILED"))

        _banner("to try your own client, export:")
        for k in ("GSS_USE_PROXY", "GSSPROXY_BEHAVIOR", "GSSPROXY_SOCKET", "GSS_MECH_CONFIG"):
            _say(f"export {k}={client_env[k]}")
        _say(f"export KRB5_CONFIG={realm.env()['KRB5_CONFIG']}")
        _say(f"# run it as {user.name} (uid {user.uid}): the service only serves that uid")
        if once or not ok:
            return 0 if ok else 1

        _banner("daemon log (Ctrl-C stops the daemon and the KDC and deletes the realm)")
        _follow(Path(daemon.log_path))
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        if realm is not None:
            realm.realm.stop()
        shutil.rmtree(top, ignore_errors=True)


def _follow(path: Path) -> None:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with path.open() as f:
        while not stop:
            line = f.readline()
            if line:
                sys.stdout.write("  " + line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    _say("\nstopping")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    ap.add_argument("--once", action="store_true", help="do not wait for Ctrl-C")
    ap.add_argument(
        "--daemon",
        metavar="PATH",
        help="run this gssproxy-py executable (an installed one) instead of the source tree's",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("GSS_USE_PROXY", "no")
    return run(args.once, args.daemon)


if __name__ == "__main__":
    sys.exit(main())
