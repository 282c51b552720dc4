"""The test side of the peer programs in tests/integration/clients/.

`PeerProcess` runs one peer (`accept.py --serve`, `init.py --serve`), possibly as
another uid, and talks to it in JSON lines (protocol in clients/peerlib.py).
`establish()` relays context tokens between an initiator and an acceptor peer;
`exercise_protection()` checks wrap/unwrap and MICs both ways afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from gssproxy_py.testing.paths import CLIENTS_DIR, VENV_PYTHON
from gssproxy_py.testing.users import DEFAULT_PATH, LocalUser, as_user_argv

Reply = dict[str, Any]


class PeerError(RuntimeError):
    """A peer reported failure, died, or did not answer in time."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


def client_argv(program: str, *args: str) -> list[str]:
    """argv that runs clients/<program> with the venv python."""
    return [str(VENV_PYTHON), str(CLIENTS_DIR / program), *args]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class PeerProcess:
    """A running peer program answering JSON-lines requests."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        user: LocalUser | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Start argv with exactly env (plus PATH), as `user` if given (needs root)."""
        self.user = user
        self.timeout = timeout
        full_env = {"PATH": DEFAULT_PATH, **env}
        cmd = as_user_argv(user, argv, full_env) if user is not None else list(argv)
        # stderr goes to a file: a pipe nobody drains could block a chatty peer.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the peer
        self.proc = subprocess.Popen(
            cmd,
            env=full_env if user is None else None,
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._buf = b""

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")

    def _readline(self, timeout: float) -> bytes:
        """One stdout line, read with os.read so a select() timeout is reliable."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise PeerError(
                        f"peer did not answer in {timeout}s; stderr:\n{self.stderr_text()}"
                    )
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise PeerError(
                        f"peer exited ({self.proc.returncode}); stderr:\n{self.stderr_text()}"
                    )
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def request(self, op: str, **fields: Any) -> Reply:
        """Send one request and return the reply, whether ok or not."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise PeerError(f"peer is gone; stderr:\n{self.stderr_text()}") from None
        reply: Reply = json.loads(self._readline(self.timeout))
        return reply

    def call(self, op: str, **fields: Any) -> Reply:
        """Like request() but raise PeerError unless the reply is ok."""
        reply = self.request(op, **fields)
        if not reply.get("ok"):
            raise PeerError(f"{op} failed: {reply.get('error')}", reply)
        return reply

    def close(self, timeout: float = 5.0) -> int:
        """Ask the peer to quit (kill it if it does not) and return its exit status."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class Established:
    """Final step replies of both sides, plus how many tokens crossed the wire."""

    initiator: Reply
    acceptor: Reply
    tokens: int


def establish(initiator: PeerProcess, acceptor: PeerProcess, max_tokens: int = 10) -> Established:
    """Relay tokens until both contexts are complete.

    Raises PeerError with the failing side's reply (e.g. the acceptor's
    `Key table entry not found`) as soon as a step fails.
    """
    init_reply = initiator.call("step")
    acc_reply: Reply = {"complete": False}
    token: str | None = init_reply["token"]
    sent = 0
    to_acceptor = True
    while token is not None:
        sent += 1
        if sent > max_tokens:
            raise PeerError(f"context not established after {max_tokens} tokens")
        if to_acceptor:
            acc_reply = acceptor.call("step", token=token)
            token = acc_reply["token"]
        else:
            init_reply = initiator.call("step", token=token)
            token = init_reply["token"]
        to_acceptor = not to_acceptor
    if not (init_reply["complete"] and acc_reply["complete"]):
        raise PeerError(f"no more tokens but not complete: {init_reply} / {acc_reply}")
    return Established(initiator=init_reply, acceptor=acc_reply, tokens=sent)


def exercise_protection(a: PeerProcess, b: PeerProcess, payload: bytes = b"gssproxy-py") -> None:
    """wrap (sealed and integrity-only) / unwrap and get_mic / verify_mic, a->b and b->a.

    Raises PeerError if any step fails, AssertionError on a data mismatch, and
    checks that a tampered MIC is rejected.
    """
    for src, dst in ((a, b), (b, a)):
        for encrypt in (True, False):
            wrapped = src.call("wrap", data=b64(payload), encrypt=encrypt)
            assert wrapped["encrypted"] is encrypt
            if encrypt:
                assert payload not in unb64(wrapped["token"]), "sealed token shows plaintext"
            unwrapped = dst.call("unwrap", token=wrapped["token"])
            assert unb64(unwrapped["data"]) == payload
            assert unwrapped["encrypted"] is encrypt
        mic = src.call("get_mic", data=b64(payload))["token"]
        dst.call("verify_mic", data=b64(payload), token=mic)
        bad = dst.request("verify_mic", data=b64(payload + b"!"), token=mic)
        assert not bad["ok"], "a MIC over different data verified"


def peer_env(*parts: Mapping[str, str]) -> dict[str, str]:
    """Merge env dicts left to right (later wins); a readability helper for tests."""
    out: dict[str, str] = {}
    for p in parts:
        out.update(p)
    return out


def ccache_env(ccache: str | os.PathLike[str]) -> dict[str, str]:
    """KRB5CCNAME for a FILE ccache path or an already qualified name."""
    name = os.fspath(ccache)
    return {"KRB5CCNAME": name if ":" in name else f"FILE:{Path(name).absolute()}"}
