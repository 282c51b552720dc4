"""Unit tests for gss/credcache.py: lifetime- and keytab-aware caching, exclusive pools."""

from __future__ import annotations

import os
from pathlib import Path

from gssproxy_py.gss.credcache import AcquireCache, AcquireKey, CredPool, FileStamps, fingerprint
from gssproxy_py.gss.credentials import Credentials, CredLease
from gssproxy_py.proto.gss_proxy import GssxCred, GssxName

NAME = GssxName(b"", b"", b"", b"", (), ())
CRED = GssxCred(NAME, (), b"blob", False)


def test_hit_until_min_lifetime(tmp_path: Path) -> None:
    c = AcquireCache()
    fp = fingerprint([])
    c.put("k", CRED, 1000.0, fp)
    assert c.get("k", fp, min_lifetime=15, now=900.0) is CRED
    assert c.get("k", fp, min_lifetime=15, now=990.0) is None  # within min_lifetime
    assert c.get("k", fp, min_lifetime=15, now=900.0) is None  # evicted
    c.put("k", CRED, None, fp)
    assert c.get("k", fp, min_lifetime=15, now=1e12) is CRED


class Hashed:
    """A part that counts how often it is hashed."""

    def __init__(self) -> None:
        self.hashed = 0

    def __hash__(self) -> int:
        self.hashed += 1
        return 7


def test_acquire_key_is_hashed_once_and_equal_by_its_parts() -> None:
    part = Hashed()
    key = AcquireKey((part, 1000, "s"))
    c = AcquireCache()
    fp = fingerprint([])
    c.put(key, CRED, None, fp)
    # Another key of the same parts (gss.direct's memo against the generic
    # path's) finds the entry; neither hashes its parts again.
    other = AcquireKey((part, 1000, "s"))
    for _ in range(3):
        assert c.get(other, fp, min_lifetime=0) is CRED
        assert c.get(key, fp, min_lifetime=0) is CRED
    assert part.hashed == 2
    assert c.get(AcquireKey((part, 1001, "s")), fp, min_lifetime=0) is None
    assert key != (part, 1000, "s") and key == other


def test_keytab_change_invalidates(tmp_path: Path) -> None:
    kt = tmp_path / "kt"
    kt.write_bytes(b"\x05\x02one")
    c = AcquireCache()
    stamps = FileStamps(interval=0)  # stat every time
    fp = fingerprint([str(kt)], stamps)
    c.put("k", CRED, None, fp)
    assert c.get("k", fingerprint([str(kt)], stamps), min_lifetime=0) is CRED
    kt.write_bytes(b"\x05\x02one-new-kvno")
    os.utime(kt, ns=(1, 1))
    assert c.get("k", fingerprint([str(kt)], stamps), min_lifetime=0) is None


def test_a_file_is_stated_at_most_once_per_interval(tmp_path: Path) -> None:
    kt = tmp_path / "kt"
    kt.write_bytes(b"\x05\x02one")
    now = [100.0]
    stamps = FileStamps(interval=1.0, clock=lambda: now[0])
    first = stamps.stamp(str(kt))
    assert first is not None
    kt.write_bytes(b"\x05\x02one-new-kvno")
    os.utime(kt, ns=(1, 1))
    now[0] = 100.9
    assert stamps.stamp(str(kt)) == first  # within the second: not stat()ed again
    now[0] = 101.0
    second = stamps.stamp(str(kt))
    assert second is not None and second != first  # the change is seen a second later
    kt.unlink()
    assert stamps.stamp(str(kt)) == second
    stamps.forget()  # as a reload does
    assert stamps.stamp(str(kt)) is None
    assert stamps.refresh(str(tmp_path)) is not None  # refresh stats at once


def test_missing_keytab_has_stable_fingerprint(tmp_path: Path) -> None:
    assert fingerprint([str(tmp_path / "nope")]) == ((str(tmp_path / "nope"), None),)


def test_lru_bound() -> None:
    c = AcquireCache(max_entries=2)
    fp = fingerprint([])
    for k in "abc":
        c.put(k, CRED, None, fp)
    assert len(c) == 2
    assert c.get("a", fp, min_lifetime=0) is None


def test_pool_checkout_is_exclusive() -> None:
    p: CredPool[object] = CredPool(max_idle_per_key=2)
    fp = fingerprint([])
    a, b = object(), object()
    assert p.checkout("k", fp) is None
    p.checkin("k", a, None, fp)
    got = p.checkout("k", fp)
    assert got is a
    assert p.checkout("k", fp) is None  # nobody else gets it while checked out
    p.checkin("k", a, None, fp)
    p.checkin("k", b, None, fp)
    assert not p.checkin("k", object(), None, fp)  # over the idle limit
    assert p.idle_count("k") == 2
    assert p.drop("k") == 2


def test_pool_expiry_and_fingerprint() -> None:
    p: CredPool[object] = CredPool()
    fp = fingerprint([])
    p.checkin("k", object(), 100.0, fp)
    assert p.checkout("k", fp, now=200.0) is None
    p.checkin("k", object(), None, fp)
    assert p.checkout("k", (("x", None),)) is None


def test_an_object_leased_before_a_clear_is_not_checked_in_after_it() -> None:
    """A reload clears the pool while a call holds a lease (a threaded
    call, a kernel accept waiting on NSS): returning it must not bring the
    entry back, with its old fingerprint and, for a pool hit, no expiry."""
    p: CredPool[object] = CredPool()
    fp = fingerprint([])
    a = object()
    p.checkin("k", a, 100.0, fp)
    generation = p.generation
    assert p.checkout("k", fp, now=50.0) is a
    p.clear()  # the reload
    assert not p.checkin("k", a, None, fp, generation)
    assert p.idle_count("k") == 0
    # Leased after it: returned as usual.
    assert p.checkin("k", a, None, fp, p.generation)
    assert p.idle_count("k") == 1


def test_a_lease_returned_after_forget_stays_out_of_the_pool() -> None:
    c = Credentials(2)
    fp = fingerprint([])
    before = CredLease(object(), None, "k", None, fp, generation=c.pool.generation)  # type: ignore[arg-type]
    c.forget()  # GssEngine.reload
    c.release(before)
    assert c.pool.idle_count("k") == 0
    after = CredLease(object(), None, "k", None, fp, generation=c.pool.generation)  # type: ignore[arg-type]
    c.release(after)
    assert c.pool.idle_count("k") == 1
