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

Both servers run for the whole measurement, and each round measures every
client count against both, the order of the two servers alternating from
one round to the next (a machine that slows down or speeds up during the
run then weighs on both). `ratio_N_round_R` = gssproxy_N / p11kit_server_N
in round R; `ratio_N` is the median of those, `p11kit_server_N` and
`gssproxy_N` the medians of the rates. The target is ratio_8 >= 1.0.

`python -m bench.p11kit_sign [--rounds R]` (default 5) prints the table;
`worker` runs one worker; `make bench` runs it with its own `--rounds`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
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
    make_token,
    print_results,
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


def measure(
    duration: float = 2.0, clients: Sequence[int] = (1, 8), rounds: int = 5
) -> dict[str, float]:
    """Signatures per second for each server and client count, and the
    ratios, over `rounds` alternating rounds (see the module docstring)."""
    for need in (MODULE, CLIENT):
        if not os.path.exists(need):
            raise RuntimeError(f"{need} is missing (make deps installs it)")
    if shutil.which(P11KIT) is None:
        raise RuntimeError("p11-kit is not installed")
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="gpy-bench-p11kit-") as tmp:
        token = make_token(Path(tmp))
        env = token.env()
        ours = str(Path(tmp) / "p11kit.sock")
        with p11kit_server(token) as theirs, running_daemon(token, f"  p11kit_socket = {ours}\n"):
            # The p11-kit server's clients log in with the PIN, as they must
            # there; gssproxy-py's send none (the daemon holds the login).
            servers = [("p11kit_server", {"socket": theirs, "login": True})]
            servers.append(("gssproxy", {"socket": ours, "login": False}))
            for r in range(rounds):
                for name, spec in servers if r % 2 == 0 else servers[::-1]:
                    for n in clients:
                        rate = _workers([spec] * n, env, duration, WORKER_MODULE)
                        rates.setdefault(f"{name}_{n}", []).append(rate)
    results: dict[str, float] = {}
    for n in clients:
        py_rates, p11kit_rates = rates[f"gssproxy_{n}"], rates[f"p11kit_server_{n}"]
        ratios = [g / p for g, p in zip(py_rates, p11kit_rates, strict=True)]
        results[f"p11kit_server_{n}"] = statistics.median(p11kit_rates)
        results[f"gssproxy_{n}"] = statistics.median(py_rates)
        results[f"ratio_{n}"] = statistics.median(ratios)
        for r, ratio in enumerate(ratios, 1):
            results[f"ratio_{n}_round_{r}"] = ratio
    return results


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["worker"]:
        worker_main(json.loads(argv[1]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.p11kit_sign", description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    args = ap.parse_args(argv)
    started = time.monotonic()
    title = "ECDSA P-256 C_Sign per second through p11-kit-client.so (SoftHSM2)"
    print_results(title, measure(args.duration, rounds=args.rounds), started)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
