"""A throwaway MIT realm whose database lives in a private OpenLDAP slapd.

MIT's db2 database cannot hold constrained-delegation ACLs
(`krbAllowedToDelegateTo`), so S4U2Proxy can only be tested against a KDC
with the LDAP backend (`kldap`), as gssproxy's own test suite does. This
module runs, all inside one directory and without touching /etc:

* `slapd` in the foreground on an `ldapi://` socket (no TCP port), with an
  mdb database, the stock schemas and MIT's `kerberos.schema` (shipped
  gzipped by Debian's krb5-kdc-ldap);
* `kdb5_ldap_util create` for the realm container and master key stash;
* `krb5kdc` on a free loopback port, exactly as `realm.Realm` does.

`LdapRealm` is a `Realm` (same env(), addprinc, ktadd, kinit, start/stop)
whose database is LDAP; `allow_delegation` writes the S4U2Proxy ACL with
`ldapmodify`. Needs root (slapd's mdb files, keytabs 0600) and the Debian
packages slapd, ldap-utils and krb5-kdc-ldap.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from gssproxy_py.testing.process import terminate
from gssproxy_py.testing.realm import DEFAULT_REALM, Realm, RealmError

__all__ = ["LdapRealm", "missing_ldap_tools"]

#: Where Debian (and other distros) put the stock schemas and MIT's LDAP schema.
SCHEMA_DIRS = (Path("/etc/ldap/schema"), Path("/etc/openldap/schema"))
KERBEROS_SCHEMAS = (
    Path("/usr/share/doc/krb5-kdc-ldap/kerberos.schema.gz"),
    Path("/usr/share/kerberos/ldap/kerberos.schema"),
)
SLAPD_MODULE_DIRS = (Path("/usr/lib/ldap"), Path("/usr/lib64/openldap"), Path("/usr/lib/openldap"))
LDAP_TOOLS = ("slapd", "slapadd", "ldapmodify", "kdb5_ldap_util")

_ADMIN_PASSWORD = "ldapadminpw"  # noqa: S105 - throwaway directory server
_KRB_CONTAINER = "krbContainer"


def missing_ldap_tools() -> list[str]:
    """What is missing to run an LdapRealm on this machine (empty if nothing)."""
    missing = [tool for tool in LDAP_TOOLS if shutil.which(tool) is None]
    if shutil.which("slapd") is None and Path("/usr/sbin/slapd").exists():
        missing.remove("slapd")
    if not any(p.exists() for p in KERBEROS_SCHEMAS):
        missing.append("kerberos.schema (krb5-kdc-ldap)")
    if not any(d.is_dir() for d in SCHEMA_DIRS):
        missing.append("LDAP schema directory (slapd)")
    if not any((d / "back_mdb.so").exists() for d in SLAPD_MODULE_DIRS):
        missing.append("back_mdb (slapd)")
    return missing


def _slapd() -> str:
    return shutil.which("slapd") or "/usr/sbin/slapd"


def _suffix(realm: str) -> str:
    return ",".join(f"dc={part.lower()}" for part in realm.split("."))


class LdapRealm(Realm):
    """A `Realm` backed by a private slapd; stop() stops both daemons."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        realm: str = DEFAULT_REALM,
        master_password: str = "masterpw",  # noqa: S107 - throwaway test realm
        enctypes: Sequence[str] | None = None,
        auth_to_local_names: Mapping[str, str] | None = None,
    ) -> None:
        kwargs = {} if enctypes is None else {"enctypes": enctypes}
        super().__init__(
            directory,
            realm=realm,
            master_password=master_password,
            auth_to_local_names=auth_to_local_names,
            **kwargs,
        )
        self.ldap_dir = self.directory / "ldap"
        self.ldapi_socket = self.ldap_dir / "ldapi"
        self.ldap_url = "ldapi://" + quote(str(self.ldapi_socket), safe="")
        self.suffix = _suffix(realm)
        self.admin_dn = f"cn=admin,{self.suffix}"
        self.container_dn = f"cn={_KRB_CONTAINER},{self.suffix}"
        self.service_password_file = self.ldap_dir / "service.stash"
        self.slapd_log = self.ldap_dir / "slapd.log"
        self._slapd: subprocess.Popen[bytes] | None = None
        self._ldap_created = False

    # -- configuration ------------------------------------------------------

    def _dbmodules(self) -> str:
        return (
            "\n[dbmodules]\n"
            f"    {self.realm} = {{\n"
            "        db_library = kldap\n"
            f"        ldap_kerberos_container_dn = {self.container_dn}\n"
            f"        ldap_kdc_dn = {self.admin_dn}\n"
            f"        ldap_kadmind_dn = {self.admin_dn}\n"
            f"        ldap_service_password_file = {self.service_password_file}\n"
            f"        ldap_servers = {self.ldap_url}\n"
            "        ldap_conns_per_server = 2\n"
            "    }\n"
        )

    def _write_configs(self) -> None:
        super()._write_configs()
        # The KDC tools read both files; S4U2Proxy wants forwardable tickets.
        extra_libdefaults = "\n[libdefaults]\n    forwardable = true\n"
        with open(self.krb5_conf, "a", encoding="utf-8") as f:
            f.write(extra_libdefaults + self._dbmodules())
        with open(self.kdc_conf, "a", encoding="utf-8") as f:
            f.write(self._dbmodules())

    def _kerberos_schema(self) -> Path:
        for candidate in KERBEROS_SCHEMAS:
            if candidate.exists():
                if candidate.suffix == ".gz":
                    out = self.ldap_dir / "kerberos.schema"
                    out.write_bytes(gzip.decompress(candidate.read_bytes()))
                    return out
                return candidate
        raise RealmError("MIT's kerberos.schema not found (install krb5-kdc-ldap)")

    def _write_slapd_conf(self) -> Path:
        schema_dir = next((d for d in SCHEMA_DIRS if d.is_dir()), None)
        module_dir = next((d for d in SLAPD_MODULE_DIRS if (d / "back_mdb.so").exists()), None)
        if schema_dir is None or module_dir is None:
            raise RealmError("slapd schemas or back_mdb not found (install slapd)")
        data = self.ldap_dir / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        schemas = [schema_dir / f"{n}.schema" for n in ("core", "cosine", "inetorgperson", "nis")]
        schemas.append(self._kerberos_schema())
        text = "".join(f"include {s}\n" for s in schemas)
        text += (
            f"pidfile {self.ldap_dir / 'slapd.pid'}\n"
            f"argsfile {self.ldap_dir / 'slapd.args'}\n"
            f"modulepath {module_dir}\n"
            "moduleload back_mdb\n"
            "\ndatabase mdb\n"
            "maxsize 67108864\n"
            f'suffix "{self.suffix}"\n'
            f'rootdn "{self.admin_dn}"\n'
            f"rootpw {_ADMIN_PASSWORD}\n"
            f"directory {data}\n"
            "index objectClass eq\n"
            "index krbPrincipalName eq,pres,sub\n"
        )
        path = self.ldap_dir / "slapd.conf"
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        return path

    def _base_ldif(self) -> str:
        top = self.suffix.split(",")[0].split("=")[1]
        return (
            f"dn: {self.suffix}\n"
            "objectClass: domain\n"
            f"dc: {top}\n"
            "\n"
            f"dn: {self.container_dn}\n"
            "objectClass: krbContainer\n"
            f"cn: {_KRB_CONTAINER}\n"
        )

    def _ldap_env(self) -> dict[str, str]:
        # LDAPNOINIT: the ldap tools ignore /etc/ldap/ldap.conf and ~/.ldaprc.
        return {**self._full_env(), "LDAPNOINIT": "1"}

    def _tool(self, argv: Sequence[str], stdin: str | None = None) -> str:
        proc = subprocess.run(
            list(argv),
            env=self._ldap_env(),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RealmError(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}".rstrip()
            )
        return proc.stdout + proc.stderr

    # -- slapd ----------------------------------------------------------------

    @property
    def slapd_running(self) -> bool:
        return self._slapd is not None and self._slapd.poll() is None

    def _ldapi_answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.ldapi_socket))
            except OSError:
                return False
            return True

    def start_slapd(self, timeout: float = 10.0) -> None:
        if self.slapd_running:
            return
        conf = self.ldap_dir / "slapd.conf"
        with open(self.slapd_log, "ab") as log:
            self._slapd = subprocess.Popen(
                [_slapd(), "-d", "0", "-f", str(conf), "-h", self.ldap_url],
                env=self._ldap_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._slapd.poll() is None:
            if self._ldapi_answers():
                return
            time.sleep(0.01)
        self._stop_slapd()
        tail = self.slapd_log.read_text(errors="replace")[-2000:]
        raise RealmError(f"slapd did not come up on {self.ldapi_socket}:\n{tail}")

    def _stop_slapd(self, timeout: float = 5.0) -> None:
        proc, self._slapd = self._slapd, None
        terminate(proc, timeout)

    # -- lifecycle --------------------------------------------------------------

    def create(self) -> None:
        """Directory server, realm container and stash (idempotent); slapd keeps running."""
        if self._created:
            self.start_slapd()
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self.db_dir.mkdir(mode=0o700, exist_ok=True)
        self.rcache_dir.mkdir(exist_ok=True)
        self.rcache_dir.chmod(0o1777)
        (self.db_dir / "kadm5.acl").touch()
        self.ldap_dir.mkdir(mode=0o700, exist_ok=True)
        from gssproxy_py.testing.net import free_port

        self.port = free_port(udp_too=True)
        self._write_configs()
        conf = self._write_slapd_conf()
        base = self.ldap_dir / "base.ldif"
        base.write_text(self._base_ldif(), encoding="utf-8")
        self._tool(["slapadd", "-f", str(conf), "-l", str(base)])
        self.start_slapd()
        self._tool(
            [
                "kdb5_ldap_util",
                "-H",
                self.ldap_url,
                "stashsrvpw",
                "-f",
                str(self.service_password_file),
                self.admin_dn,
            ],
            stdin=f"{_ADMIN_PASSWORD}\n{_ADMIN_PASSWORD}\n",
        )
        self._tool(
            [
                "kdb5_ldap_util",
                "-H",
                self.ldap_url,
                "-D",
                self.admin_dn,
                "-w",
                _ADMIN_PASSWORD,
                "create",
                "-s",
                "-r",
                self.realm,
                "-P",
                self.master_password,
            ]
        )
        self._created = True

    def start(self, timeout: float = 5.0) -> None:
        self.create()
        self.start_slapd()
        super().start(timeout)

    def stop(self) -> None:
        super().stop()
        self._stop_slapd()

    # -- delegation ACLs ------------------------------------------------------------

    def principal_dn(self, principal: str) -> str:
        """The LDAP entry kadmin created for principal (kldap's default layout)."""
        princ = self.principal(principal)
        escaped = princ.replace("\\", "\\5c").replace(",", "\\2c").replace("+", "\\2b")
        return f"krbPrincipalName={escaped},cn={self.realm},{self.container_dn}"

    def allow_delegation(self, principal: str, targets: Iterable[str]) -> None:
        """Let `principal` use S4U2Proxy towards `targets` (krbAllowedToDelegateTo)."""
        values = "".join(f"krbAllowedToDelegateTo: {self.principal(t)}\n" for t in targets)
        ldif = (
            f"dn: {self.principal_dn(principal)}\n"
            "changetype: modify\n"
            "add: krbAllowedToDelegateTo\n"
            f"{values}"
            "-\n"
        )
        self._tool(
            ["ldapmodify", "-x", "-H", self.ldap_url, "-D", self.admin_dn, "-w", _ADMIN_PASSWORD],
            stdin=ldif,
        )
