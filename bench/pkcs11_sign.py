"""ECDSA P-256 signatures per second: through the daemon's TOKEN_SIGN program
against python-pkcs11 in the signing process itself, in the same run.

`measure()` is self-contained: it creates a SoftHSM2 token in a temporary
directory (its own softhsm2.conf, a P-256 key made on the token, the PIN in
a 0600 file), starts gssproxy-py on a private socket with one service for
that key, runs the workloads, stops the daemon and removes everything. It
takes about 15 s with the defaults (bounded well under 60 s).

Every workload signs the same 32-byte message with ECDSA over SHA-256 and
gets the DER signature a TOKEN_SIGN client gets (SoftHSM offers only raw
CKM_ECDSA, so the hash is made in Python and the raw r||s encoded as DER
in both cases):

* `daemon_N`: N client processes, each with one connection and
  `TokenSignClient.sign` in a loop (one SIGN round trip per signature);
* `inproc_procs_N`: N processes, each loading the module and signing on
  its own session (independent module instances, as N programs would);
* `inproc_threads_N`: one process, N threads with a session each, calls
  serialised by a lock (python-pkcs11 initialises the module without
  CKF_OS_LOCKING_OK, so one module instance must not be entered by two
  threads at once -- the daemon's module thread follows the same rule).

All workers start together after they are set up (connected, logged in),
run for `duration` seconds and report their count. The result has those
rates (signatures per second) and the ratios `ratio_N` =
daemon_N / inproc_procs_N and `ratio_threads_N` = daemon_N /
inproc_threads_N. The target is ratio_8 >= 0.5.

`python -m bench.pkcs11_sign` prints the table; the same module with
`worker` runs one worker process (internal).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "benchsign"  # noqa: S105 -- a token label, not a secret
KEY_LABEL = "p256"
SO_PIN = "87654321"
PIN = "bench-Sign-PIN-3371"
MESSAGE = b"gssproxy-py TOKEN_SIGN benchmark"
#: Setup limits, so that a broken environment cannot hang the caller.
SETUP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Token:
    directory: Path
    conf: Path
    pin_file: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}


def _run(argv: Sequence[str], env: dict[str, str]) -> None:
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=SETUP_TIMEOUT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stdout}{proc.stderr}")


def make_token(directory: Path) -> Token:
    """A fresh SoftHSM2 token in `directory` with a P-256 key generated on it."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    token = Token(directory, conf, directory / "pin")
    env = token.env()
    init = ["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL]
    _run([*init, "--so-pin", SO_PIN, "--pin", PIN], env)
    tool = ["pkcs11-tool", "--module", MODULE, "--token-label", TOKEN_LABEL, "--login"]
    keygen = ["--keypairgen", "--key-type", "EC:prime256v1", "--label", KEY_LABEL, "--id", "01"]
    _run([*tool, "--pin", PIN, *keygen], env)
    token.pin_file.write_text(PIN + "\n")
    token.pin_file.chmod(0o600)
    return token


# -- the daemon ---------------------------------------------------------------------


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    socket: str
    log: Path


@contextlib.contextmanager
def running_daemon(token: Token, service_extra: str = "") -> Iterator[Daemon]:
    """gssproxy-py with one TOKEN_SIGN service for the token's key, at debug
    level 0 (as deployed); ready when a SIGN succeeds. `service_extra` is
    appended to the service section (bench.p11kit_sign adds its socket)."""
    d = token.directory
    sock = str(d / "gssproxy.sock")
    conf = d / "gssproxy.conf"
    (d / "conf.d").mkdir()
    conf.write_text(
        "[gssproxy]\n"
        f"  state_dir = {d / 'state'}\n"
        "[service/bench-sign]\n"
        "  mechs = krb5\n"
        f"  euid = {os.geteuid()}\n"
        f"  socket = {sock}\n"
        f"  pkcs11_module = {MODULE}\n"
        f"  pkcs11_uri = pkcs11:token={TOKEN_LABEL};object={KEY_LABEL}\n"
        f"  pkcs11_pin = file:{token.pin_file}\n" + service_extra
    )
    conf.chmod(0o600)
    argv = [sys.executable, "-m", "gssproxy_py.server.cli", "-i", "--debug-level=0"]
    argv += ["-c", str(conf), "-C", str(d / "conf.d"), "-s", sock]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        "SOFTHSM2_CONF": str(token.conf),
    }
    log = d / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=d, stdout=out, stderr=subprocess.STDOUT)
    daemon = Daemon(proc, sock, log)
    try:
        _wait_ready(daemon)
        yield daemon
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a server still running, SIGKILL it after 10 s, and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(daemon: Daemon) -> None:
    from gssproxy_py.client.token_sign import TokenSignClient

    deadline = time.monotonic() + SETUP_TIMEOUT
    problem: Exception | None = None
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            break
        if os.path.exists(daemon.socket):
            try:
                with TokenSignClient(daemon.socket, timeout=5) as client:
                    client.sign(_uri(), "ecdsa-sha256", MESSAGE)
                return
            except Exception as e:
                problem = e
        time.sleep(0.05)
    tail = daemon.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the daemon did not become ready ({problem}); log ends:\n{tail}")


def _uri() -> str:
    return f"pkcs11:token={TOKEN_LABEL};object={KEY_LABEL}"


# -- workers (child processes) --------------------------------------------------------


def _client_worker(spec: dict[str, Any]) -> Generator[int, float, None]:
    from gssproxy_py.client.token_sign import TokenSignClient

    with TokenSignClient(spec["socket"], timeout=30) as client:
        uri = _uri()
        client.sign(uri, "ecdsa-sha256", MESSAGE)  # connected, key found
        end = yield 0
        n = 0
        while time.monotonic() < end:
            client.sign(uri, "ecdsa-sha256", MESSAGE)
            n += 1
        yield n


def _open_key(lib: Any, *, login: bool = True) -> tuple[Any, Any]:
    from pkcs11 import KeyType, ObjectClass

    # The login is per application and token: later sessions share it.
    session = lib.get_token(token_label=TOKEN_LABEL).open(user_pin=PIN if login else None)
    key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label=KEY_LABEL)
    return session, key


def _sign_in_process(key: Any) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from pkcs11 import Mechanism

    raw = key.sign(hashlib.sha256(MESSAGE).digest(), mechanism=Mechanism.ECDSA)
    return bytes(encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:])))


def _inproc_worker(spec: dict[str, Any]) -> Generator[int, float, None]:
    import pkcs11

    lib = pkcs11.lib(MODULE)
    session, key = _open_key(lib)
    threads = int(spec.get("threads", 1))
    if threads == 1:
        _sign_in_process(key)
        end = yield 0
        n = 0
        while time.monotonic() < end:
            _sign_in_process(key)
            n += 1
        session.close()
        yield n
        return
    lock = threading.Lock()
    keys = [key] + [_open_key(lib, login=False)[1] for _ in range(threads - 1)]
    counts = [0] * threads
    go = threading.Event()
    stop_at = [0.0]

    def loop(i: int) -> None:
        go.wait()
        n = 0
        while time.monotonic() < stop_at[0]:
            with lock:
                _sign_in_process(keys[i])
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    stop_at[0] = yield 0
    go.set()
    for w in workers:
        w.join()
    yield sum(counts)


def run_worker(gen: Generator[int, float, None]) -> None:
    """Set up (the generator's first step), print "ready", wait for the go
    line (the end time on this machine's monotonic clock), sign until then,
    print the count."""
    next(gen)
    print("ready", flush=True)
    end = float(sys.stdin.readline())
    print(gen.send(end), flush=True)


def worker_main(spec: dict[str, Any]) -> None:
    """One worker of this module's workloads (see `run_worker`)."""
    kind = spec["kind"]
    run_worker(_client_worker(spec) if kind == "client" else _inproc_worker(spec))


# -- the parent ------------------------------------------------------------------------


def _start_worker(
    spec: dict[str, Any], env: dict[str, str], module: str = "bench.pkcs11_sign"
) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-m", module, "worker", json.dumps(spec)],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], SETUP_TIMEOUT)
    line = p.stdout.readline().strip() if ready else ""
    if line != "ready":
        p.kill()
        _, err = p.communicate()
        raise RuntimeError(f"a bench worker did not start: {line!r} {err[-2000:]}")
    return p


def _workers(
    specs: list[dict[str, Any]],
    env: dict[str, str],
    duration: float,
    module: str = "bench.pkcs11_sign",
) -> float:
    """Start the workers, release them together, return signatures per second.

    They are set up one after the other: SoftHSM processes that initialise
    and log in at the same moment can miss the token while another one
    rewrites its file."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for spec in specs:
            # One by one, each in `procs` at once: a failed start still stops the others.
            procs.append(_start_worker(spec, env, module))  # noqa: PERF401
        end = time.monotonic() + duration
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{end}\n")
            p.stdin.flush()
        total = 0
        for p in procs:
            out, err = p.communicate(timeout=duration + SETUP_TIMEOUT)
            if p.returncode != 0:
                raise RuntimeError(f"a bench worker failed: {err[-2000:]}")
            total += int(out.strip().splitlines()[-1])
        return total / duration
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def measure(duration: float = 2.0, clients: Sequence[int] = (1, 8)) -> dict[str, float]:
    """Signatures per second for each workload and client count, and the
    ratios (see the module docstring)."""
    if not os.path.exists(MODULE) or shutil.which("softhsm2-util") is None:
        raise RuntimeError("SoftHSM2 is not installed")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gpy-bench-sign-") as tmp:
        token = make_token(Path(tmp))
        env = token.env()
        for n in clients:
            results[f"inproc_procs_{n}"] = _workers([{"kind": "inproc"}] * n, env, duration)
            if n > 1:
                spec = {"kind": "inproc", "threads": n}
                results[f"inproc_threads_{n}"] = _workers([spec], env, duration)
        with running_daemon(token) as daemon:
            for n in clients:
                spec = {"kind": "client", "socket": daemon.socket}
                results[f"daemon_{n}"] = _workers([spec] * n, env, duration)
    for n in clients:
        results[f"ratio_{n}"] = results[f"daemon_{n}"] / results[f"inproc_procs_{n}"]
        if n > 1:
            results[f"ratio_threads_{n}"] = results[f"daemon_{n}"] / results[f"inproc_threads_{n}"]
    return results


def print_results(title: str, results: dict[str, float], started: float) -> None:
    """The table `python -m bench.pkcs11_sign` (and bench.p11kit_sign) print."""
    print(title)
    for key, value in results.items():
        shown = f"{value:10.3f}" if key.startswith("ratio") else f"{value:10.0f}"
        print(f"  {key:22s} {shown}")
    print(f"({time.monotonic() - started:.1f} s)")


def bench_main(
    argv: Sequence[str],
    title: str,
    measure: Callable[[], dict[str, float]],
    worker_main: Callable[[dict[str, Any]], None],
) -> int:
    """A signing bench's command line: `worker SPEC` runs one worker process
    (the bench starts its clients this way), anything else measures and prints."""
    if argv[:1] == ["worker"]:
        worker_main(json.loads(argv[1]))
        return 0
    started = time.monotonic()
    print_results(title, measure(), started)
    return 0


def main(argv: Sequence[str]) -> int:
    title = "ECDSA P-256 signatures per second (SoftHSM2), TOKEN_SIGN vs in-process python-pkcs11"
    return bench_main(argv, title, measure, worker_main)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
