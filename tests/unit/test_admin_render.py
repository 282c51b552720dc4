"""`gssproxy-py-ctl status` as text, whole: every section filled, and every
section empty (what each says when there is nothing to list)."""

from __future__ import annotations

from gssproxy_py.admin.render import render_prometheus, render_text
from gssproxy_py.admin.stats import (
    SYSTEM_ERR_CODE,
    CallCounters,
    total_calls,
    total_connections,
    total_pools,
)
from gssproxy_py.proto.admin import (
    AdmPool,
    AdmProcess,
    AdmStatus,
    AdmTokenSession,
    AdmUidConnections,
    AdmUpcall,
)
from gssproxy_py.proto.gss_proxy import GSSPROXY
from gssproxy_py.proto.token_sign import TOKEN_SIGN


def test_every_section_filled() -> None:
    c = CallCounters()
    for us in (10, 10, 10, 3000):
        c.record("svc", GSSPROXY, "GSSX_WRAP", us * 1000, 0)
    c.record("svc", GSSPROXY, "GSSX_WRAP", 5_000, 13 << 16)
    c.record("", TOKEN_SIGN, "TS_SIGN", 1, SYSTEM_ERR_CODE)
    c.record("svc", GSSPROXY, "GSSX_ACCEPT_SEC_CONTEXT", 100_000, 0)
    c.record("svc", GSSPROXY, "GSSX_ACCEPT_SEC_CONTEXT", 20_000, 0).direct += 1
    status = AdmStatus(
        version=b"0.1.0",
        mode=b"system",
        uptime_ms=90_061_000,
        generation=3,
        files=(b"/etc/gssproxy/gssproxy.conf", b"/etc/gssproxy/24-nfs.conf"),
        connections=(AdmUidConnections(0, 2), AdmUidConnections(1000, 1)),
        calls_in_flight=1,
        calls=c.snapshot(),
        pools=(AdmPool(b"gss", 4, 1, 0, 0, False), AdmPool(b"pkcs11-softhsm", 1, 0, 2, 1, True)),
        upcalls=(
            AdmUpcall(b"", b"enabled", b"written", False),
            AdmUpcall(b"blue", b"failed", b"ENOENT", True),
        ),
        tokens=(
            AdmTokenSession(b"/usr/lib/softhsm/libsofthsm2.so", b"tok", True),
            AdmTokenSession(b"/m.so", b"t2", False),
        ),
        processes=(),
    )
    assert render_text(status) == (
        "gssproxy-py 0.1.0 (system mode), up 1d 1h 1m 1s\n"
        "configuration generation 3: /etc/gssproxy/gssproxy.conf, /etc/gssproxy/24-nfs.conf\n"
        "connections: uid 0: 2, uid 1000: 1; calls in flight: 1\n"
        "\n"
        "calls (direct: by the direct path; latency: the bucket bound under which "
        "50 % / 99 % of calls ended):\n"
        "  service       program     procedure                calls  direct  p50    p99       errors\n"
        "  (no service)  token_sign  TS_SIGN                  1      0       <1us   <1us      "
        "1 (SYSTEM_ERR 1)\n"
        "  svc           gssproxy    GSSX_ACCEPT_SEC_CONTEXT  2      1       <32us  <128us    0\n"
        "  svc           gssproxy    GSSX_WRAP                5      0       <16us  <4.096ms  "
        "1 (GSS_S_FAILURE 1)\n"
        "\n"
        "worker pools:\n"
        "  gss: 4 threads, 1 busy, 0 queued, 0 written off\n"
        "  pkcs11-softhsm: 1 threads, 0 busy, 2 queued, 1 written off BROKEN\n"
        "\n"
        "kernel upcall (use-gss-proxy):\n"
        "  own network namespace: enabled - written\n"
        "  blue: failed, retrying - ENOENT\n"
        "\n"
        "token sessions:\n"
        "  /usr/lib/softhsm/libsofthsm2.so tok: open\n"
        "  /m.so t2: closed\n"
    )


def test_every_section_empty() -> None:
    status = AdmStatus(b"0.1.0", b"userproxy", 5_000, 1, (), (), 0, (), (), (), (), ())
    assert render_text(status) == (
        "gssproxy-py 0.1.0 (userproxy mode), up 5s\n"
        "configuration generation 1: (synthesised)\n"
        "connections: none; calls in flight: 0\n"
        "\n"
        "calls (direct: by the direct path; latency: the bucket bound under which "
        "50 % / 99 % of calls ended):\n"
        "  none yet\n"
        "\n"
        "worker pools:\n"
        "  none started\n"
        "\n"
        "kernel upcall (use-gss-proxy):\n"
        "  not used (no kernel_nfsd service)\n"
        "\n"
        "token sessions:\n"
        "  none\n"
    )


def _process(number: int, pid: int, counters: CallCounters, uid_connections: int) -> AdmProcess:
    return AdmProcess(
        number=number,
        pid=pid,
        answered=True,
        connections=(AdmUidConnections(0, uid_connections),),
        calls_in_flight=number,
        calls=counters.snapshot(),
        pools=(AdmPool(b"gss-svc", 4, number, 0, 0, number == 2),),
    )


def test_totals_over_processes_and_each_process_shown() -> None:
    first, worker = CallCounters(), CallCounters()
    first.record("svc", GSSPROXY, "GSSX_WRAP", 10_000, 0)
    first.record("svc", GSSPROXY, "GSSX_ACCEPT_SEC_CONTEXT", 10_000, 0).direct += 1
    worker.record("svc", GSSPROXY, "GSSX_ACCEPT_SEC_CONTEXT", 10_000, 0).direct += 1
    worker.record("svc", GSSPROXY, "GSSX_ACCEPT_SEC_CONTEXT", 10_000, 0)
    worker.record("svc", GSSPROXY, "GSSX_WRAP", 3_000_000, 13 << 16)
    worker.record("svc", GSSPROXY, "GSSX_UNWRAP", 10_000, 0)
    processes = (
        _process(0, 100, first, 1),
        _process(1, 102, worker, 2),
        AdmProcess(2, 0, False, (), 0, (), ()),
    )
    answered = processes[:2]
    calls = total_calls(answered)
    assert [(r.procedure, r.calls, r.direct) for r in calls] == [
        (b"GSSX_ACCEPT_SEC_CONTEXT", 3, 2),
        (b"GSSX_UNWRAP", 1, 0),
        (b"GSSX_WRAP", 2, 0),
    ]
    wrap = calls[2]
    assert [(e.code, e.count) for e in wrap.errors] == [(13 << 16, 1)]
    assert wrap.latency_sum_us == 3010 and sum(wrap.latency_buckets) == 2
    assert total_connections(answered) == (AdmUidConnections(0, 3),)
    assert total_pools(answered) == (AdmPool(b"gss-svc", 8, 1, 0, 0, False),)
    status = AdmStatus(
        b"0.1.0",
        b"system",
        1_000,
        1,
        (),
        (AdmUidConnections(0, 3),),
        1,
        calls,
        (),
        (),
        (),
        processes,
    )
    text = render_text(status)
    assert text.endswith(
        "processes (the figures above are their totals):\n"
        "  first process, pid 100: connections uid 0: 1; calls in flight 0; 2 calls, 0 errors\n"
        "    service  program   procedure                calls  direct  p50    p99    errors\n"
        "    svc      gssproxy  GSSX_ACCEPT_SEC_CONTEXT  1      1       <16us  <16us  0\n"
        "    svc      gssproxy  GSSX_WRAP                1      0       <16us  <16us  0\n"
        "  worker 1, pid 102: connections uid 0: 2; calls in flight 1; 4 calls, 1 errors\n"
        "    service  program   procedure                calls  direct  p50       p99       errors\n"
        "    svc      gssproxy  GSSX_ACCEPT_SEC_CONTEXT  2      1       <16us     <16us     0\n"
        "    svc      gssproxy  GSSX_UNWRAP              1      0       <16us     <16us     0\n"
        "    svc      gssproxy  GSSX_WRAP                1      0       <4.096ms  <4.096ms  "
        "1 (GSS_S_FAILURE 1)\n"
        "  worker 2: no answer (being forked again, or stuck)\n"
    ), text
    prom = render_prometheus(status)
    assert 'gssproxy_py_process_answered{process="2"} 0' in prom
    assert 'gssproxy_py_process_connections{process="1"} 2' in prom
    assert (
        'gssproxy_py_process_calls_total{process="1",service="svc",program="gssproxy",'
        'procedure="GSSX_UNWRAP"} 1'
    ) in prom
    assert (
        'gssproxy_py_calls_direct_total{service="svc",program="gssproxy",'
        'procedure="GSSX_ACCEPT_SEC_CONTEXT"} 2'
    ) in prom
