"""`run_as_user`: leave root once the sockets exist, as gssproxy does; and
`drop_all_capabilities` for the p11-kit workers, which need none once their
module is logged in.

What stays: only CAP_SYS_PTRACE, in the permitted and effective sets of the
thread that accepts connections, because matching `program =` reads
/proc/PID/exe of processes owned by other users. Everything else goes,
including the bounding set, so nothing can be regained later.

Capabilities are per thread in Linux, so this runs on the event-loop thread
(the one that reads /proc at accept), before the adapters start their worker
threads. Worker threads do not need the capability: they open keytabs and
ccaches, which must be readable by the user (the administrator's job; the
error says so).

`set_dumpable` is PR_SET_DUMPABLE (`allow_core_dumps`): the daemon's
processes hold keytab keys, PINs and the handle key, so by default they are
not dumpable: no core file, and no ptrace or /proc/PID/mem by other
processes of their uid (their /proc/PID files then belong to root). A
change of uid (`run_as_user`) resets it to the kernel's `suid_dumpable`,
so it is set again after the drop.

`drop_all_capabilities` empties every set of the calling thread (bounding,
when it may: CAP_SETPCAP; ambient, permitted, effective, inheritable) and
sets no_new_privs, so nothing is gained back by exec either; it checks the
result and raises if a set is not empty.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
import stat

from gssproxy_py.errors import LocalError

CAP_SETPCAP = 8
CAP_SYS_PTRACE = 19
_PR_CAPBSET_DROP = 24
_PR_SET_KEEPCAPS = 8
_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPSET = 126  # x86_64


class PrivilegeDropError(LocalError):
    """run_as_user could not be honoured; the daemon must not run half-dropped."""


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, what: str, context: str = "run_as_user") -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise PrivilegeDropError(f"{context}: {what} failed: {os.strerror(err)}")


def _last_cap() -> int:
    try:
        with open(_CAP_LAST_CAP_FILE) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


def drop_privileges(user: str, *, keep: tuple[int, ...] = (CAP_SYS_PTRACE,)) -> tuple[int, int]:
    """Become `user` (uid, gid, supplementary groups), keeping only `keep`.

    Returns (uid, gid). Raises PrivilegeDropError, in which case the caller
    must exit: a daemon that meant to drop root and could not must not serve.
    """
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeDropError(f"run_as_user: no such user {user!r}") from None
    if os.geteuid() != 0:
        raise PrivilegeDropError("run_as_user needs the daemon to start as root")
    libc = _libc()
    # The bounding set can only shrink while we still hold CAP_SETPCAP (root).
    for cap in range(_last_cap() + 1):
        if cap not in keep:
            _check(libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")
    _check(libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "PR_SET_KEEPCAPS")
    try:
        os.setgroups(os.getgrouplist(pw.pw_name, pw.pw_gid))
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    except OSError as e:
        raise PrivilegeDropError(f"run_as_user: switching to {user}: {e.strerror}") from None
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    _capset(libc, mask, "setting the kept capabilities")
    _check(libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0), "clearing PR_SET_KEEPCAPS")
    if os.getuid() != pw.pw_uid or os.geteuid() != pw.pw_uid:
        raise PrivilegeDropError("run_as_user: the uid did not change")
    return pw.pw_uid, pw.pw_gid


def set_dumpable(dumpable: bool) -> None:
    """PR_SET_DUMPABLE 1 or 0 for this process (inherited over fork, not
    over a change of uid). Raises `PrivilegeDropError`."""
    libc = _libc()
    _check(libc.prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "PR_SET_DUMPABLE", "dumpable")


def is_dumpable() -> bool:
    """PR_GET_DUMPABLE of this process."""
    return bool(_libc().prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 1)


def apply_allow_core_dumps(allow: bool, log: logging.Logger) -> None:
    """Make this process dumpable or not as `allow_core_dumps` says, and
    say so when that changes. Raises `PrivilegeDropError`."""
    was = is_dumpable()
    set_dumpable(allow)
    if allow and not was:
        log.warning(
            "allow_core_dumps = yes: core files, and ptrace by uid %d, reach the keys and "
            "PINs of process %d",
            os.geteuid(),
            os.getpid(),
        )
    elif was and not allow:
        log.info("process %d is not dumpable (allow_core_dumps = no)", os.getpid())


def _capset(libc: ctypes.CDLL, mask: int, what: str, context: str = "run_as_user") -> None:
    """Permitted and effective = `mask`, inheritable empty (this thread)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = mask & 0xFFFFFFFF
    data[1].effective = data[1].permitted = mask >> 32
    _check(libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), what, context)


_DROP_ALL = "dropping every capability"


def drop_all_capabilities() -> None:
    """Leave this thread no capability, now or after an exec.

    The bounding set is emptied only while CAP_SETPCAP is held (as root): a
    process of another uid cannot, and keeps what it had (under
    `run_as_user`, CAP_SYS_PTRACE), which no_new_privs makes unreachable.
    Raises `PrivilegeDropError` if a call fails or a set is left non-empty.
    """
    libc = _libc()
    bounding = bool(capability_sets()["CapEff"] & (1 << CAP_SETPCAP))
    if bounding:
        for cap in range(_last_cap() + 1):
            _check(libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping {cap}", _DROP_ALL)
    _check(
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
        "clearing the ambient set",
        _DROP_ALL,
    )
    _capset(libc, 0, "capset", _DROP_ALL)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS", _DROP_ALL)
    left = {k: v for k, v in capability_sets().items() if v and (bounding or k != "CapBnd")}
    if left:
        raise PrivilegeDropError(f"{_DROP_ALL}: still held: {left}")


def threads_with_capabilities() -> list[int]:
    """The threads of this process that hold an effective or permitted
    capability (capabilities are per thread: a module may have started
    threads before the drop)."""
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            sets = _capability_sets(f"/proc/self/task/{tid}/status")
        except OSError:
            continue  # the thread ended
        if sets["CapPrm"] or sets["CapEff"]:
            out.append(int(tid))
    return sorted(out)


def give_state_dir(state_dir: str, user: str) -> None:
    """Hand `state_dir` (and the files in it) to `user` before dropping root:
    the handle key file is refused unless the daemon's own uid owns it."""
    pw = pwd.getpwnam(user)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chown(state_dir, pw.pw_uid, pw.pw_gid)
    for name in os.listdir(state_dir):
        path = os.path.join(state_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.chown(path, pw.pw_uid, pw.pw_gid)


def reclaim_state_dir(state_dir: str) -> int | None:
    """Take `state_dir` and its files back when the daemon stays root.

    Turning `run_as_user` on hands them to that user (`give_state_dir`);
    turning it off again would leave a root daemon whose handle key file is
    refused as owned by someone else. Returns the uid they belonged to, or
    None if nothing changed. Symbolic links are never followed or changed.
    """
    euid, egid = os.geteuid(), os.getegid()
    try:
        st = os.lstat(state_dir)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    previous = None
    if st.st_uid != euid:
        previous = st.st_uid
        os.chown(state_dir, euid, egid, follow_symlinks=False)
    for name in os.listdir(state_dir):
        path = os.path.join(state_dir, name)
        fst = os.lstat(path)
        if stat.S_ISREG(fst.st_mode) and fst.st_uid != euid:
            previous = fst.st_uid if previous is None else previous
            os.chown(path, euid, egid, follow_symlinks=False)
    return previous


def _capability_sets(status: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(status) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                out[key] = int(value.strip(), 16)
    return out


def capability_sets() -> dict[str, int]:
    """This thread's capability sets, from /proc/thread-self/status."""
    return _capability_sets("/proc/thread-self/status")
