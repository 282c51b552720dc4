"""The validated configuration: global settings, services and the whole `Config`.

These are plain frozen values. They are built by `options.py` from the INI
sections and consumed by the server (listeners, limits, reload), by
`match.py` (which service serves a peer) and by the GSS and PKCS#11 handlers
(what a service may do).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from gssproxy_py.config.flags import DEFAULT_ENFORCE_FLAGS, DEFAULT_FILTER_FLAGS

DEFAULT_WORKER_THREADS = 5
DEFAULT_STATE_DIR = "/var/lib/gssproxy-py"
DEFAULT_MAX_RECORD_SIZE = 1024 * 1024
MIN_MAX_RECORD_SIZE = 4096
MAX_MAX_RECORD_SIZE = 16 * 1024 * 1024
#: More processes than this gain nothing on any host we know and risk
#: exhausting descriptors and memory by a typo.
MAX_WORKER_PROCESSES = 64
DEFAULT_MAX_CALLS_PER_CONNECTION = 16
DEFAULT_CALL_TIMEOUT = 10.0
DEFAULT_USE_GSS_PROXY_FILE = "/proc/net/rpc/use-gss-proxy"
DEFAULT_MIN_LIFETIME = 15
# Tenant isolation (docs/RELIABILITY.md): far above what a busy NFS server
# uses (the kernel holds one connection per network namespace, as root).
DEFAULT_MAX_CONNECTIONS = 8192
DEFAULT_MAX_CONNECTIONS_PER_UID = 512
DEFAULT_P11KIT_MAX_WORKERS = 64
DEFAULT_P11KIT_MAX_WORKERS_PER_UID = 16
DEFAULT_FD_RESERVE = 128
DEFAULT_RECORD_TIMEOUT = 15.0
DEFAULT_IDLE_CONNECTION_TIMEOUT = 600.0
DEFAULT_INPUT_BUDGET = 64 * 1024 * 1024
DEFAULT_INPUT_BUDGET_PER_UID = 16 * 1024 * 1024
DEFAULT_REFUSAL_LOG_INTERVAL = 10.0


class CredUsage(IntEnum):
    """A service's `cred_usage`; values are the `gssx_cred_usage` wire values."""

    INITIATE = 1
    ACCEPT = 2
    BOTH = 3


class Mech(StrEnum):
    """Mechanisms a service may list in `mechs`."""

    KRB5 = "krb5"


class PinSourceKind(StrEnum):
    """Where a PKCS#11 PIN is read from."""

    KEYRING = "keyring"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class PinSource:
    """`pkcs11_pin = keyring:DESCRIPTION` or `file:PATH`.

    `location` is the key description or the absolute file path, never the
    PIN itself.
    """

    kind: PinSourceKind
    location: str


@dataclass(frozen=True, slots=True)
class SelinuxContext:
    """An SELinux context `user:role:type[:range]`.

    The range may itself contain colons (`s0-s0:c0.c1023`), so only the first
    three colons separate fields.
    """

    user: str
    role: str
    type: str
    range: str | None = None

    @classmethod
    def parse(cls, text: str) -> SelinuxContext | None:
        """Parse a context string; None if it lacks user, role or type."""
        parts = text.split(":", 3)
        if len(parts) < 3 or not all(parts[:3]):
            return None
        if len(parts) == 4:
            if not parts[3]:
                return None
            return cls(parts[0], parts[1], parts[2], parts[3])
        return cls(parts[0], parts[1], parts[2])

    def admits(self, peer: SelinuxContext) -> bool:
        """Whether a peer context satisfies this (configured) one.

        The range is compared only when the configuration gives one.
        """
        if (self.user, self.role, self.type) != (peer.user, peer.role, peer.type):
            return False
        return self.range is None or self.range == peer.range

    def __str__(self) -> str:
        base = f"{self.user}:{self.role}:{self.type}"
        return base if self.range is None else f"{base}:{self.range}"


@dataclass(frozen=True, slots=True)
class OptionOrigin:
    """Where an option of a service or of `[gssproxy]` was set."""

    option: str
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class GlobalSettings:
    """The `[gssproxy]` section.

    gssproxy's options:

    * `debug_level`: from `debug_level` (int ≥ 0), else 1 if `debug` is true,
      else 0 (the command line may override it).
    * `syslog_status`: log every GSS failure status to syslog.
    * `run_as_user`: user name to switch to after the sockets exist; resolved
      by the server, kept as written.
    * `worker_threads`: from `worker threads` (with the space), ≥ 1.

    Our additions:

    * `worker_processes` (1..`MAX_WORKER_PROCESSES`): processes serving the
      GSS-Proxy sockets (`server/workers.py`); read at start only.

    * `state_dir` (`state_dir`, absolute path): where the credential-handle key
      file lives.
    * `max_record_size` (bytes, 4096..16 MiB): largest RPC record accepted or
      sent; gssproxy's fixed limit is 1 MiB.
    * `max_calls_per_connection` (≥ 1): calls from one connection processed
      concurrently; gssproxy handles one at a time.
    * `call_timeout` (seconds, > 0): deadline for one call; below the
      interposer's 15 s client timeout by default.
    * `admin_socket` (absolute path): the root-only socket of the admin
      program (`gssproxy-py-ctl`); None: beside the default socket.
    * `use_gss_proxy_file` (absolute path): the kernel's enable file, written
      for services with `kernel_nfsd`; configurable because `/proc/net/rpc`
      may not exist (tests, containers).

    Tenant isolation (docs/RELIABILITY.md):

    * `max_connections` (≥ 1): connections of all non-root peers together.
    * `max_connections_per_uid` (≥ 1): connections of one non-root uid.
    * `fd_reserve` (≥ 16): descriptors that non-root connections leave free
      for root, the kernel, keytabs and replay caches.
    * `record_timeout` (seconds, > 0): a record that has started must be
      complete within it, or the connection is closed.
    * `idle_connection_timeout` (seconds, 0 = never): a connection with no
      call in flight and nothing received for this long is closed.
    * `input_budget` / `input_budget_per_uid` (bytes): partial records
      buffered across all connections, and by one uid.
    * `turn_calls_per_connection`, `turn_calls_per_uid`, `turn_calls` (≥ 1):
      fairness under load (`server/fairness.py`): calls one connection may
      start per event or turn, the pipelining connections of one uid per
      turn, and all of them per turn.
    * `turn_time_us` (microseconds, ≥ 10): how long the pipelining
      connections' part of one turn may run before the loop polls again.
    * `refusal_log_interval` (seconds, > 0): at most one line per interval
      says a connection was refused (and one that a partial record was
      dropped), with how many more were since.
    * `p11kit_max_workers` (≥ 1): p11-kit worker processes (one per
      `p11kit_socket` connection, `server/p11kit_workers.py`) at once;
      beyond it a connection is refused.
    * `p11kit_max_workers_per_uid` (≥ 1): of those, the ones one uid other
      than root may hold, so one user cannot take them all.
    * `strict_modes`: refuse configuration files, keytabs and client keytabs
      that a non-root user could change (`strict.py`).
    * `allow_core_dumps`: leave the daemon's processes dumpable
      (PR_SET_DUMPABLE, `server/privileges.py`); off by default.
    """

    debug_level: int = 0
    syslog_status: bool = False
    run_as_user: str | None = None
    worker_threads: int = DEFAULT_WORKER_THREADS
    worker_processes: int = 1
    state_dir: str = DEFAULT_STATE_DIR
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE
    max_calls_per_connection: int = DEFAULT_MAX_CALLS_PER_CONNECTION
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    use_gss_proxy_file: str = DEFAULT_USE_GSS_PROXY_FILE
    admin_socket: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_uid: int = DEFAULT_MAX_CONNECTIONS_PER_UID
    fd_reserve: int = DEFAULT_FD_RESERVE
    record_timeout: float = DEFAULT_RECORD_TIMEOUT
    idle_connection_timeout: float = DEFAULT_IDLE_CONNECTION_TIMEOUT
    input_budget: int = DEFAULT_INPUT_BUDGET
    input_budget_per_uid: int = DEFAULT_INPUT_BUDGET_PER_UID
    refusal_log_interval: float = DEFAULT_REFUSAL_LOG_INTERVAL
    turn_calls_per_connection: int = 2
    turn_calls_per_uid: int = 32
    turn_calls: int = 64
    turn_time_us: int = 100
    strict_modes: bool = True
    p11kit_max_workers: int = DEFAULT_P11KIT_MAX_WORKERS
    p11kit_max_workers_per_uid: int = DEFAULT_P11KIT_MAX_WORKERS_PER_UID
    allow_core_dumps: bool = False
    origins: tuple[OptionOrigin, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    """One `[service/NAME]` section.

    gssproxy's options keep their names and meanings (docs/CONFIG.md lists each);
    `socket` is normalised with `os.path.normpath` (no symlink resolution) and
    None means the default socket. `cred_store` keeps every `key:value` pair in
    file order, unexpanded (see `expand.py`).

    Our additions:

    * `netns` / `netns_all`: `netns = NAME [NAME...]` restricts the service to
      peers in those named network namespaces (`/run/netns/NAME`);
      `netns = all` sets `netns_all` and means every namespace. Unset means
      no namespace restriction in matching.
    * `pkcs11_module`: absolute path of the PKCS#11 module to load.
    * `pkcs11_uris`: the `pkcs11_uri` values (multi-valued), each starting
      with `pkcs11:`; parsed fully by the PKCS#11 layer.
    * `pkcs11_pin`: where the token PIN comes from.
    * `pkcs11_session_keys`: whether the token layer signs and decrypts
      with session copies of the service's private keys (default yes).
    * `p11kit_socket`: where the service's keys are served to
      `p11-kit-client.so` (normalised like `socket`); None: not served so.
    * `p11kit_mechanisms`: the mechanisms (names without `CKM_`) p11-kit
      consumers of the service may use; None means every one served.

    `file` / `line` locate the section header; `origins` locate each option.
    """

    name: str
    euid: int
    mechs: tuple[Mech, ...]
    file: str = "<string>"
    line: int = 0
    cred_store: tuple[tuple[str, str], ...] = ()
    krb5_principal: str | None = None
    cred_usage: CredUsage = CredUsage.BOTH
    socket: str | None = None
    program: str | None = None
    selinux_context: SelinuxContext | None = None
    allow_any_uid: bool = False
    trusted: bool = False
    impersonate: bool = False
    allow_protocol_transition: bool = False
    allow_constrained_delegation: bool = False
    allow_client_ccache_sync: bool = False
    kernel_nfsd: bool = False
    filter_flags: int = DEFAULT_FILTER_FLAGS
    enforce_flags: int = DEFAULT_ENFORCE_FLAGS
    min_lifetime: int = DEFAULT_MIN_LIFETIME
    netns: tuple[str, ...] = ()
    netns_all: bool = False
    pkcs11_module: str | None = None
    pkcs11_uris: tuple[str, ...] = ()
    pkcs11_pin: PinSource | None = None
    pkcs11_session_keys: bool = True
    p11kit_socket: str | None = None
    p11kit_mechanisms: tuple[str, ...] | None = None
    origins: tuple[OptionOrigin, ...] = ()

    def origin(self, option: str) -> OptionOrigin | None:
        """Where `option` was first set in this service, if it was."""
        for o in self.origins:
            if o.option == option:
                return o
        return None

    def cred_store_values(self, key: str) -> tuple[str, ...]:
        """All (unexpanded) `cred_store` values for `key`, in order."""
        return tuple(v for k, v in self.cred_store if k == key)


@dataclass(frozen=True, slots=True)
class Config:
    """A whole loaded configuration.

    `services` keep configuration order: the main file first, then conf.d
    files in sorted order, and within a file the order of first appearance.
    `files` lists what was read, in that order. `warnings` are likely
    mistakes (unknown options, sections dropped because an earlier file
    defined them); `notes` are informational (conf.d files skipped by name).
    """

    globals: GlobalSettings
    services: tuple[Service, ...]
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def service(self, name: str) -> Service | None:
        """The service called `name`, if configured."""
        for svc in self.services:
            if svc.name == name:
                return svc
        return None
