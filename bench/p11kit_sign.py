"""C_Sign round trips per second through p11-kit-client.so: gssproxy-py's
p11kit_socket against `p11-kit server` on the same token, in the same run.

`measure()` makes a SoftHSM2 token with a P-256 key (bench.pkcs11_sign's),
then for each server and client count starts N worker processes that load
`p11-kit-client.so` with python-pkcs11 (the same client code for both
servers), find the key, and sign a 32-byte digest with CKM_ECDSA in a loop.
python-pkcs11's sign is C_SignInit, a C_Sign size query and C_Sign: three
requests per signature either way.

* `p11kit_server_N`: `p11-kit server --provider libsofthsm2.so`, which
  forks one `p11-kit-remote` (with its own SoftHSM instance) per connection;
  its clients log in with the PIN, as they must there.
* `gssproxy_N`: gssproxy-py with one service whose `p11kit_socket` serves
  the key; the daemon holds the login, the clients send no PIN.

`ratio_N` = gssproxy_N / p11kit_server_N; the target is ratio_8 >= 1.0.
`python -m bench.p11kit_sign` prints the table; `worker` runs one worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.pkcs11_sign import (
    KEY_LABEL,
    MESSAGE,
    MODULE,
    PIN,
    SETUP_TIMEOUT,
    TOKEN_LABEL,
    Token,
    _workers,
    bench_main,
    make_token,
    run_worker,
    running_daemon,
    stop_process,
)

CLIENT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
P11KIT = "p11-kit"
WORKER_MODULE = "bench.p11kit_sign"


def _worker(spec: dict[str, Any]) -> Generator[int, float, None]:
    import pkcs11
    from pkcs11 import KeyType, Mechanism, ObjectClass

    os.environ["P11_KIT_SERVER_ADDRESS"] = f"unix:path={spec['socket']}"
    lib = pkcs11.lib(CLIENT)
    token = lib.get_token(token_label=TOKEN_LABEL)
    session = token.open(user_pin=PIN if spec["login"] else None)
    key: Any = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label=KEY_LABEL)
    digest = hashlib.sha256(MESSAGE).digest()
    key.sign(digest, mechanism=Mechanism.ECDSA)
    end = yield 0
    n = 0
    while time.monotonic() < end:
        key.sign(digest, mechanism=Mechanism.ECDSA)
        n += 1
    yield n


def worker_main(spec: dict[str, Any]) -> None:
    run_worker(_worker(spec))


@contextlib.contextmanager
def p11kit_server(token: Token) -> Iterator[str]:
    """`p11-kit server` in the foreground for the token; yields its socket."""
    d = token.directory
    sock = str(d / "p11kit-server.sock")
    (d / "run").mkdir(exist_ok=True)
    env = {**token.env(), "XDG_RUNTIME_DIR": str(d / "run")}
    argv = [P11KIT, "server", "-f", "-n", sock, "--provider", MODULE, f"pkcs11:token={TOKEN_LABEL}"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + SETUP_TIMEOUT
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"p11-kit server did not start: {err[-1000:]}")
            time.sleep(0.05)
        yield sock
    finally:
        stop_process(proc)


def measure(duration: float = 2.0, clients: Sequence[int] = (1, 8)) -> dict[str, float]:
    """Signatures per second for each server and client count, and the ratios."""
    for need in (MODULE, CLIENT):
        if not os.path.exists(need):
            raise RuntimeError(f"{need} is missing (make deps installs it)")
    if shutil.which(P11KIT) is None:
        raise RuntimeError("p11-kit is not installed")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gpy-bench-p11kit-") as tmp:
        token = make_token(Path(tmp))
        env = token.env()
        with p11kit_server(token) as sock:
            for n in clients:
                spec = {"socket": sock, "login": True}
                results[f"p11kit_server_{n}"] = _workers([spec] * n, env, duration, WORKER_MODULE)
        ours = str(Path(tmp) / "p11kit.sock")
        with running_daemon(token, f"  p11kit_socket = {ours}\n"):
            for n in clients:
                spec = {"socket": ours, "login": False}
                results[f"gssproxy_{n}"] = _workers([spec] * n, env, duration, WORKER_MODULE)
    for n in clients:
        results[f"ratio_{n}"] = results[f"gssproxy_{n}"] / results[f"p11kit_server_{n}"]
    return results


def main(argv: Sequence[str]) -> int:
    title = "ECDSA P-256 C_Sign per second through p11-kit-client.so (SoftHSM2)"
    return bench_main(argv, title, measure, worker_main)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
