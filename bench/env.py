"""The bench's own realm, keytabs and one gssproxy.conf per daemon.

Everything lives under one work directory (default build/bench/work, wiped at
start). Both daemons get the same configuration text apart from their socket
paths, the same keytabs, the same environment (KRB5_CONFIG of the throwaway
realm, the same KRB5RCACHEDIR) and the same debug level, so any difference in
the table comes from the daemon.

Services (all for root, the bench's client uid):

* `bench-accept`: accept through the interposer (service keytab, host/localhost);
* `bench-init`: init through the interposer with `client_keytab` (alice's keys);
* `bench-kernel`: the kernel-style workload (nfs/localhost keytab); the
  initiator alice maps to the local user `nobody` through auth_to_local, so the
  `linux_creds_v1` answer needs a real passwd/group lookup, as for nfsd.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gssproxy_py.testing.daemon import Impl, daemon_argv, render_config, write_config
from gssproxy_py.testing.interposer import write_mech_conf
from gssproxy_py.testing.paths import REPO_ROOT
from gssproxy_py.testing.process import terminate
from gssproxy_py.testing.realm import Realm

#: Where gssproxy-py is imported from: this checkout, or another one given in
#: BENCH_PY_TREE (e.g. a `git worktree` of an older commit, for before/after).
PY_TREE = Path(os.environ.get("BENCH_PY_TREE") or REPO_ROOT)
#: BENCH_PY_BEFORE_TREE: a second gssproxy-py tree measured in the same run
#: (rounds C, py-before, py, baseline), for a before/after table.
PY_BEFORE_TREE = Path(p) if (p := os.environ.get("BENCH_PY_BEFORE_TREE")) else None
#: BENCH_PY_WORKERS=N (N > 1): gssproxy-py with `worker_processes = N` is
#: measured too, in the same rounds, as "py-wN", with a table against py (1).
PY_WORKERS = int(os.environ.get("BENCH_PY_WORKERS", "1") or "1")

#: The local account the kernel workload's initiator maps to (present on Debian).
MAPPED_USER = "nobody"
#: The daemons' debug level during measurements: 0, as deployed (and as the
#: C daemon was measured before). Neither prints a readiness line at 0, so
#: readiness is "every socket accepts a connection" (BenchDaemon.start).
DEBUG_LEVEL = 0


@dataclass(frozen=True)
class BenchRealm:
    realm: Realm
    alice: str
    alice_ccache: Path
    host_target: str  # host-based name for init_sec_context
    host_keytab: Path
    nfs_target: str
    nfs_keytab: Path
    alice_keytab: Path  # client_keytab for the init service
    mech_conf: Path

    def env(self) -> dict[str, str]:
        return self.realm.env()


def make_realm(workdir: Path) -> BenchRealm:
    """Create and start the realm (the caller stops it)."""
    realm = Realm(workdir / "realm", auth_to_local_names={"alice@EXAMPLE.TEST": MAPPED_USER})
    realm.create()
    password = "alicepw"  # noqa: S105 - throwaway realm
    alice = realm.addprinc("alice", password)
    host = realm.addprinc("host/localhost")
    nfs = realm.addprinc("nfs/localhost")
    host_keytab = realm.ktadd(host, realm.directory / "host.keytab")
    nfs_keytab = realm.ktadd(nfs, realm.directory / "nfs.keytab")
    alice_keytab = realm.ktadd(alice, realm.directory / "alice.keytab")
    realm.start()
    ccache = realm.directory / "alice.ccache"
    realm.kinit(alice, ccache, password=password)
    return BenchRealm(
        realm=realm,
        alice=alice,
        alice_ccache=ccache,
        host_target="host@localhost",
        host_keytab=host_keytab,
        nfs_target="nfs@localhost",
        nfs_keytab=nfs_keytab,
        alice_keytab=alice_keytab,
        mech_conf=write_mech_conf(workdir),
    )


@dataclass(frozen=True)
class Sockets:
    accept: Path
    init: Path
    kernel: Path
    default: Path


def sockets_in(directory: Path) -> Sockets:
    return Sockets(
        accept=directory / "accept.sock",
        init=directory / "init.sock",
        kernel=directory / "kernel.sock",
        default=directory / "default.sock",
    )


def config_text(
    r: BenchRealm,
    s: Sockets,
    state_dir: Path,
    *,
    worker_threads: int | None = None,
    worker_processes: int = 1,
) -> str:
    """The one configuration both daemons run (only the paths differ).

    `state_dir` is ours (the handle key file); the C daemon ignores it.
    """
    global_options: dict[str, str | int] = {
        "debug_level": DEBUG_LEVEL,
        "state_dir": str(state_dir),
    }
    if worker_threads is not None:
        global_options["worker threads"] = worker_threads
    if worker_processes > 1:
        global_options["worker_processes"] = worker_processes
    return render_config(
        {
            "bench-accept": {
                "mechs": "krb5",
                "socket": str(s.accept),
                "cred_store": f"keytab:{r.host_keytab}",
                "cred_usage": "accept",
                "euid": 0,
            },
            "bench-init": {
                "mechs": "krb5",
                "socket": str(s.init),
                "cred_store": f"client_keytab:{r.alice_keytab}",
                "cred_usage": "initiate",
                "euid": 0,
            },
            "bench-kernel": {
                "mechs": "krb5",
                "socket": str(s.kernel),
                "cred_store": f"keytab:{r.nfs_keytab}",
                "cred_usage": "accept",
                "trusted": "yes",
                "euid": 0,
            },
        },
        global_options=global_options,
    )


class BenchDaemon:
    """One daemon process at debug level 0.

    gssproxy_py.testing.DaemonProcess waits for a debug-level-1 log line and
    always passes -d; here neither daemon gets a debug flag, so the level in
    the shared configuration (0) decides for both alike.
    """

    def __init__(
        self,
        impl: Impl,
        config: Path,
        sockets: Sockets,
        env: dict[str, str],
        extra_args: tuple[str, ...] = (),
        tree: Path = PY_TREE,
    ) -> None:
        self.impl: Impl = impl
        self.tree = tree
        self.config = config
        self.sockets = sockets
        self.log_path = config.parent / "daemon.log"
        argv = daemon_argv(
            impl,
            config=config,
            confdir=config.parent / "conf.d",
            socket=sockets.default,
            debug_level=1,
        )
        self.argv = [a for a in argv if a != "-d" and not a.startswith("--debug-level")]
        self.argv += extra_args
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        if impl == "py":
            self.env["PYTHONPATH"] = str(tree)
            # A profile of the pure build (`GSSPROXY_PY_NO_MYPYC=1 python -m
            # bench.daemonprof ...`) attributes time to Python functions.
            if (pure := os.environ.get("GSSPROXY_PY_NO_MYPYC")) is not None:
                self.env["GSSPROXY_PY_NO_MYPYC"] = pure
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 15.0) -> None:
        (self.config.parent / "conf.d").mkdir(exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=str(self.tree) if self.impl == "py" else "/",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        for path in (self.sockets.accept, self.sockets.init, self.sockets.kernel):
            while not _connects(path):
                if self._proc.poll() is not None:
                    raise RuntimeError(f"{self.impl} daemon exited: {self.log_tail()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.impl} daemon not listening: {self.log_tail()}")
                time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        terminate(proc, timeout)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _connects(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def daemon(
    impl: Impl,
    r: BenchRealm,
    workdir: Path,
    py_args: tuple[str, ...] = (),
    tree: Path = PY_TREE,
    worker_processes: int = 1,
) -> BenchDaemon:
    """A (not yet started) daemon of impl with its own directory and sockets
    (`worker_processes`: gssproxy-py's, ignored by C)."""
    d = workdir / f"daemon-{impl}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    s = sockets_in(d)
    text = config_text(r, s, d / "state", worker_processes=worker_processes)
    conf = write_config(d / "gssproxy.conf", text)
    return BenchDaemon(impl, conf, s, r.env(), py_args if impl == "py" else (), tree)
