"""A throwaway MIT Kerberos realm (KDC + database + config files) in one directory.

`Realm` writes its own krb5.conf/kdc.conf, creates the database with
`kdb5_util`, manages principals with `kadmin.local`, and runs `krb5kdc -n` on a
free loopback port.  Nothing outside the directory is used, provided callers pass
`Realm.env()` to every Kerberos program they run (/etc/krb5.conf on the build
machine names the wrong realm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gssproxy_py.testing.net import LOOPBACK, free_port, tcp_answers
from gssproxy_py.testing.process import terminate

DEFAULT_REALM = "EXAMPLE.TEST"
DEFAULT_ENCTYPES = ("aes256-cts-hmac-sha1-96:normal", "aes128-cts-hmac-sha1-96:normal")

# Other uids (test clients) must read krb5.conf and write replay caches; the
# database and keytabs stay root-only.
_DIR_MODE = 0o755
_PUBLIC_FILE_MODE = 0o644
_SECRET_MODE = 0o600
_RCACHE_DIR_MODE = 0o1777  # like /var/tmp: rcache files are per-uid (krb5_<uid>.rcache2)

_START_ATTEMPTS = 3
_KDC_READY = b"commencing operation"


class RealmError(RuntimeError):
    """A Kerberos admin tool or the KDC failed; the message carries its output."""


def _run(argv: Sequence[str], env: Mapping[str, str], stdin: str | None = None) -> str:
    proc = subprocess.run(
        list(argv),
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0:
        raise RealmError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}".rstrip()
        )
    return proc.stdout + proc.stderr


class Realm:
    """One MIT realm living in `directory`; use as a context manager or call
    create()/start()/stop() yourself."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        realm: str = DEFAULT_REALM,
        master_password: str = "masterpw",  # noqa: S107 - throwaway test realm
        enctypes: Sequence[str] = DEFAULT_ENCTYPES,
        auth_to_local_names: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.realm = realm
        self.master_password = master_password
        self.enctypes = tuple(enctypes)
        # Explicit principal->user mappings on top of the default rule (which
        # already maps NAME@<default realm> to NAME).
        self.auth_to_local_names = dict(auth_to_local_names or {})
        self.krb5_conf = self.directory / "krb5.conf"
        self.kdc_conf = self.directory / "kdc.conf"
        self.db_dir = self.directory / "db"
        self.rcache_dir = self.directory / "rcache"
        self.kdc_log = self.directory / "kdc.log"
        self.port = 0
        self._created = False
        self._kdc: subprocess.Popen[bytes] | None = None

    # -- files -------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Variables that point Kerberos tools at this realm and away from /etc."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5RCACHEDIR": str(self.rcache_dir),
        }

    def _full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def principal(self, name: str) -> str:
        """`name` qualified with this realm unless it already has one."""
        return name if "@" in name else f"{name}@{self.realm}"

    def _write_configs(self) -> None:
        kdc = f"{LOOPBACK}:{self.port}"
        a2l = "".join(
            f"            {princ} = {user}\n" for princ, user in self.auth_to_local_names.items()
        )
        a2l_block = f"        auth_to_local_names = {{\n{a2l}        }}\n" if a2l else ""
        krb5 = (
            "[libdefaults]\n"
            f"    default_realm = {self.realm}\n"
            "    dns_lookup_realm = false\n"
            "    dns_lookup_kdc = false\n"
            "    dns_canonicalize_hostname = false\n"
            "    rdns = false\n"
            "    udp_preference_limit = 1\n"
            "\n[realms]\n"
            f"    {self.realm} = {{\n"
            f"        kdc = {kdc}\n"
            # DEFAULT maps NAME@default_realm to the local user NAME.
            "        auth_to_local = DEFAULT\n"
            f"{a2l_block}"
            "    }\n"
            "\n[domain_realm]\n"
            f"    localhost = {self.realm}\n"
        )
        kdcconf = (
            "[kdcdefaults]\n"
            f"    kdc_listen = {kdc}\n"
            f"    kdc_tcp_listen = {kdc}\n"
            "\n[realms]\n"
            f"    {self.realm} = {{\n"
            f"        database_name = {self.db_dir / 'principal'}\n"
            f"        key_stash_file = {self.db_dir / 'stash'}\n"
            f"        acl_file = {self.db_dir / 'kadm5.acl'}\n"
            f"        kdc_listen = {kdc}\n"
            f"        kdc_tcp_listen = {kdc}\n"
            f"        supported_enctypes = {' '.join(self.enctypes)}\n"
            "    }\n"
            "\n[logging]\n"
            f"    kdc = FILE:{self.kdc_log}\n"
            f"    admin_server = FILE:{self.directory / 'kadmin.log'}\n"
            f"    default = FILE:{self.directory / 'krb5lib.log'}\n"
        )
        for path, text in ((self.krb5_conf, krb5), (self.kdc_conf, kdcconf)):
            path.write_text(text, encoding="utf-8")
            path.chmod(_PUBLIC_FILE_MODE)

    # -- lifecycle -----------------------------------------------------------

    def create(self) -> None:
        """Write the config files and create the database (idempotent)."""
        if self._created:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(_DIR_MODE)
        self.db_dir.mkdir(mode=0o700, exist_ok=True)
        self.rcache_dir.mkdir(exist_ok=True)
        self.rcache_dir.chmod(_RCACHE_DIR_MODE)
        (self.db_dir / "kadm5.acl").touch()
        self.port = free_port(udp_too=True)
        self._write_configs()
        _run(
            ["kdb5_util", "create", "-s", "-r", self.realm, "-P", self.master_password],
            self._full_env(),
        )
        self._created = True

    @property
    def running(self) -> bool:
        return self._kdc is not None and self._kdc.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        """Start `krb5kdc -n` and return once it has bound its ports and answers.

        free_port() cannot reserve the port, so if the KDC dies (port taken in the
        meantime) a new port is picked and the configs are rewritten.
        """
        self.create()
        if self.running:
            return
        last_error = ""
        for attempt in range(_START_ATTEMPTS):
            if attempt:
                self.port = free_port(udp_too=True)
                self._write_configs()
            log_offset = self.kdc_log.stat().st_size if self.kdc_log.exists() else 0
            with open(self.directory / "krb5kdc.out", "ab") as out:
                self._kdc = subprocess.Popen(
                    ["krb5kdc", "-n", "-P", str(self.directory / "kdc.pid")],
                    env=self._full_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._kdc.poll() is None:
                # A connect alone is not proof: whoever took the port would answer
                # too.  krb5kdc logs this line only once all its sockets are bound.
                if self._kdc_log_has(_KDC_READY, log_offset) and tcp_answers(self.port):
                    return
                time.sleep(0.005)
            last_error = self._tail()
            self._kill_kdc()
        raise RealmError(f"krb5kdc did not come up on port {self.port}:\n{last_error}")

    def _kdc_log_has(self, text: bytes, offset: int) -> bool:
        try:
            with open(self.kdc_log, "rb") as f:
                f.seek(offset)
                return text in f.read()
        except FileNotFoundError:
            return False

    def _tail(self, lines: int = 20) -> str:
        texts = []
        for p in (self.directory / "krb5kdc.out", self.kdc_log):
            if p.exists():
                texts.extend(p.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts)

    def _kill_kdc(self, timeout: float = 5.0) -> None:
        kdc, self._kdc = self._kdc, None
        terminate(kdc, timeout)

    def stop(self) -> None:
        """Stop the KDC (the database and files stay)."""
        self._kill_kdc()

    def __enter__(self) -> Realm:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- admin ---------------------------------------------------------------

    def kadmin(self, *args: str) -> str:
        """Run one kadmin.local command given as separate argv words (no quoting
        pitfalls: kadmin.local accepts `command args...` after its options)."""
        self.create()
        return _run(["kadmin.local", "-r", self.realm, *args], self._full_env())

    def addprinc(self, name: str, password: str | None = None, *, flags: Sequence[str] = ()) -> str:
        """Add a principal with a password, or random keys if password is None.

        flags are kadmin options such as "+requires_preauth" or "-allow_tix".
        Returns the fully qualified principal name.
        """
        princ = self.principal(name)
        key_args = ["-randkey"] if password is None else ["-pw", password]
        self.kadmin("addprinc", *key_args, *flags, princ)
        return princ

    def ktadd(self, principal: str, keytab: str | os.PathLike[str]) -> Path:
        """Export the principal's current keys into keytab (mode 0600, owner root).

        -norandkey keeps the keys as they are, so a password principal can still
        kinit with its password afterwards.
        """
        path = Path(keytab).absolute()
        self.kadmin("ktadd", "-k", str(path), "-norandkey", self.principal(principal))
        path.chmod(_SECRET_MODE)
        return path

    def kinit(
        self,
        principal: str,
        ccache: str | os.PathLike[str],
        *,
        password: str | None = None,
        keytab: str | os.PathLike[str] | None = None,
        owner: tuple[int, int] | None = None,
    ) -> str:
        """Get a TGT for principal into the FILE ccache at `ccache`.

        Exactly one of password/keytab.  `owner=(uid, gid)` chowns the ccache so
        another uid can use it.  Returns the ccache name ("FILE:/...").
        """
        if (password is None) == (keytab is None):
            raise ValueError("give exactly one of password= or keytab=")
        self.start()  # kinit needs the KDC
        path = Path(ccache).absolute()
        name = f"FILE:{path}"
        argv = ["kinit", "-c", name]
        if keytab is not None:
            argv += ["-k", "-t", str(Path(keytab).absolute())]
        argv.append(self.principal(principal))
        _run(argv, self._full_env(), stdin=None if password is None else password + "\n")
        if owner is not None:
            os.chown(path, *owner)
        return name

    def destroy(self) -> None:
        """Stop the KDC and delete the whole directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class StandardRealm:
    """The realm layout tests, `make run` and benchmarks share (see standard_realm)."""

    realm: Realm
    alice: str
    alice_password: str
    alice_ccache: Path
    host_service: str  # host-based name of the service in service_keytab
    service_principal: str
    service_keytab: Path
    nfs_principal: str
    nfs_keytab: Path

    def env(self) -> dict[str, str]:
        return self.realm.env()


def standard_realm(directory: str | os.PathLike[str]) -> StandardRealm:
    """Create and start a Realm in directory with the usual principals:

    - alice (password "alicepw"), with a TGT in <dir>/alice.ccache (root-only);
    - host/localhost (random key) in <dir>/service.keytab (0600 root);
    - nfs/localhost (random key) in <dir>/nfs.keytab (0600 root).
    The caller stops it (StandardRealm.realm.stop()).
    """
    realm = Realm(directory)
    realm.create()
    password = "alicepw"  # noqa: S105 - throwaway test realm
    alice = realm.addprinc("alice", password)
    host = realm.addprinc("host/localhost")
    nfs = realm.addprinc("nfs/localhost")
    service_keytab = realm.ktadd(host, realm.directory / "service.keytab")
    nfs_keytab = realm.ktadd(nfs, realm.directory / "nfs.keytab")
    realm.start()
    ccache = realm.directory / "alice.ccache"
    realm.kinit(alice, ccache, password=password)
    return StandardRealm(
        realm=realm,
        alice=alice,
        alice_password=password,
        alice_ccache=ccache,
        host_service="host@localhost",
        service_principal=host,
        service_keytab=service_keytab,
        nfs_principal=nfs,
        nfs_keytab=nfs_keytab,
    )


def keytab_without_kdc(principal: str, password: str, path: str | os.PathLike[str]) -> Path:
    """A keytab for `principal` (aes256) made with ktutil, without any KDC:
    for a realm whose KDC is a blackhole, or none at all."""
    script = (
        f"addent -password -p {principal} -k 1 -e aes256-cts-hmac-sha1-96\n"
        f"{password}\n"
        f"wkt {os.fspath(path)}\n"
        "quit\n"
    )
    subprocess.run(["ktutil"], input=script.encode(), check=True, capture_output=True)
    return Path(path)
