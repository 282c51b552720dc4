"""`gssproxy-py-ctl check-config` and `explain`, the call counters and the
status renderings, with no daemon: real files, the daemon's own loader and
matcher, and `gssproxy-py-ctl` run as the command it is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gssproxy_py.admin.check import c_differences, check_config, explain
from gssproxy_py.admin.pin import container_name, default_description
from gssproxy_py.admin.render import code_name, render_prometheus, render_text
from gssproxy_py.admin.stats import SYSTEM_ERR_CODE, CallCounters, outcome_code, quantile
from gssproxy_py.config.load import load_config_text, read_sections
from gssproxy_py.errors import ConfigError
from gssproxy_py.proto.admin import AdmStatus
from gssproxy_py.proto.gss_proxy import GSSPROXY
from gssproxy_py.proto.token_sign import TOKEN_SIGN

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SOCK = "/var/lib/gssproxy/default.sock"


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gssproxy_py.admin.ctl", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("conf", sorted(p.name for p in CONF.glob("*.conf")))
def test_every_shipped_file_passes_check_config(conf: str) -> None:
    """Each conf.d file alone; the main file (no services of its own) with
    its directory, as the daemon reads it."""
    extra = ["-C", str(CONF)] if conf == "gssproxy.conf" else []
    done = ctl("check-config", "-c", str(CONF / conf), *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error:" not in done.stdout
    assert re.search(r"^OK: \d+ service\(s\)", done.stdout, re.M)


def test_the_shipped_directory_passes_and_shows_effective_services() -> None:
    done = ctl("check-config", "-c", str(CONF / "gssproxy.conf"), "-C", str(CONF))
    assert done.returncode == 0, done.stdout
    assert "[service/nfs-server]" in done.stdout
    assert "  socket = /run/gssproxy.sock" in done.stdout
    assert "  cred_store = keytab:/etc/krb5.keytab" in done.stdout
    assert "  kernel_nfsd = yes" in done.stdout


def test_every_error_is_reported_with_file_line_and_option(tmp_path: Path) -> None:
    conf = tmp_path / "gssproxy.conf"
    conf.write_text(
        "[gssproxy]\n  worker threads = none\n\n"
        "[service/a]\n  mechs = krb5\n  euid = 0\n  trusted = ture\n  cred_usage = sideways\n\n"
        "[service/b]\n  mechs = krb5\n  krb5_keytab = /etc/krb5.keytab\n"
    )
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-x.conf").write_text(
        "[service/c]\n  mechs = krb5\n  euid = nobody-such-user-x\n"
    )
    done = ctl("check-config", "-c", str(conf), "-C", str(tmp_path / "conf.d"))
    assert done.returncode == 1
    out = done.stdout
    for line, option in (
        (2, "worker threads"),
        (7, "trusted"),
        (8, "cred_usage"),
        (12, "krb5_keytab"),
    ):
        assert re.search(
            rf"^error: {re.escape(str(conf))}:{line}: option '{option}': ", out, re.M
        ), out
    assert re.search(r"^error: .*10-x.conf:3: option 'euid': ", out, re.M), out
    # and b lacks euid
    assert "6 error(s)" in out


def test_warnings_for_what_the_c_daemon_reads_differently(tmp_path: Path) -> None:
    conf = tmp_path / "gssproxy.conf"
    conf.write_text(
        "[gssproxy]\n  call_timeout = 5\n\n"
        "[service/a]\n  mechs = krb5, krb5\n  euid = 0\n  trusted = YES\n"
        "  filter_flags = +INTEGRITY\n"
    )
    report = check_config(str(conf), None, default_socket=SOCK)
    assert report.config is not None and not report.errors
    text = "\n".join(report.warnings)
    assert f"{conf}:2: option 'call_timeout': the C gssproxy does not know this option" in text
    assert f"{conf}:5: option 'mechs': the C gssproxy compares the whole value" in text
    assert f"{conf}:8: option 'filter_flags': the C gssproxy logs and skips" in text
    assert "'trusted'" not in text  # C's gp_boolean_is_true reads YES as true too
    sections, _ = read_sections([str(conf)])
    assert c_differences(sections) == list(report.warnings)


EXPLAIN_CONF = """[service/nfs-server]
  mechs = krb5
  euid = 0
  socket = /run/gssproxy.sock
  trusted = yes

[service/gssd]
  mechs = krb5
  euid = 0
  program = /usr/sbin/rpc.gssd

[service/users]
  mechs = krb5
  euid = 0
  allow_any_uid = yes
"""


def test_explain_names_the_first_rule_that_excludes_each_service() -> None:
    config = load_config_text(EXPLAIN_CONF, "x.conf", default_socket=SOCK)
    winner, rows, who = explain(
        config, uid=1000, gid=1000, program="/usr/bin/ssh", socket_path=SOCK, default_socket=SOCK
    )
    assert winner is not None and winner.name == "users"
    reasons = {s.name: why for s, why in rows}
    assert reasons == {
        "nfs-server": "requires euid 0",
        "gssd": "requires euid 0",
        "users": None,
    }
    assert "uid 1000" in who and "/usr/bin/ssh" in who
    winner, rows, _ = explain(
        config, uid=0, gid=0, program="/usr/sbin/rpc.gssd", socket_path=SOCK, default_socket=SOCK
    )
    assert winner is not None and winner.name == "gssd"
    assert {s.name: w for s, w in rows}["nfs-server"] == "listens on /run/gssproxy.sock"


def test_explain_command(tmp_path: Path) -> None:
    conf = tmp_path / "gssproxy.conf"
    conf.write_text(EXPLAIN_CONF.replace("allow_any_uid = yes", "program = /usr/bin/ssh"))
    done = ctl("explain", "-c", str(conf), "-s", SOCK, "--uid", "0", "--program", "/usr/bin/ssh")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "served by: service 'users'" in done.stdout
    assert "not 'gssd'" in done.stdout and "requires program /usr/sbin/rpc.gssd" in done.stdout
    nobody = ctl("explain", "-c", str(conf), "-s", SOCK, "--uid", "1000")
    assert nobody.returncode == 1
    assert "served by: no service" in nobody.stdout


def test_counters_and_quantiles() -> None:
    c = CallCounters()
    for us in (10, 10, 10, 3000):
        c.record("svc", GSSPROXY, "GSSX_WRAP", us * 1000, 0)
    c.record("svc", GSSPROXY, "GSSX_WRAP", 5_000, 13 << 16)
    c.record("", TOKEN_SIGN, "TS_SIGN", 1, SYSTEM_ERR_CODE)
    (sign, wrap) = c.snapshot()
    assert (wrap.calls, wrap.latency_sum_us) == (5, 3035)
    assert [(e.code, e.count) for e in wrap.errors] == [(13 << 16, 1)]
    assert quantile(wrap.latency_buckets, 0.5) == 16  # 10 us is in [8, 16)
    assert quantile(wrap.latency_buckets, 0.99) == 4096
    assert quantile([0, 0], 0.5) is None
    assert (sign.procedure, sign.latency_buckets[0]) == (b"TS_SIGN", 1)
    assert code_name(GSSPROXY, 13 << 16) == "GSS_S_FAILURE"
    assert code_name(GSSPROXY, (7 << 16) | 1) == "GSS_S_NO_CRED"
    assert code_name(TOKEN_SIGN, 9) == "TS_PIN_ERROR"
    assert code_name(GSSPROXY, SYSTEM_ERR_CODE) == "SYSTEM_ERR"
    status = AdmStatus(
        version=b"0.1.0",
        mode=b"system",
        uptime_ms=3_723_000,
        generation=2,
        files=(b"/etc/gssproxy/gssproxy.conf",),
        connections=(),
        calls_in_flight=0,
        calls=c.snapshot(),
        pools=(),
        upcalls=(),
        tokens=(),
        processes=(),
    )
    text = render_text(status)
    assert "up 1h 2m 3s" in text and "GSS_S_FAILURE 1" in text
    prom = render_prometheus(status)
    assert (
        'gssproxy_py_calls_total{service="svc",program="gssproxy",procedure="GSSX_WRAP"} 5' in prom
    )
    assert (
        'gssproxy_py_call_duration_seconds_bucket{service="svc",program="gssproxy",'
        'procedure="GSSX_WRAP",le="+Inf"} 5' in prom
    )
    assert 'code="SYSTEM_ERR"} 1' in prom


class _Status:
    major_status = 0x70000


class _GssResult:
    status = _Status()


def test_outcome_codes() -> None:
    assert outcome_code(_GssResult()) == 0x70000
    assert outcome_code(None) == 0


def test_pin_descriptions_name_the_container(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent")
    assert container_name({}, absent, absent) is None
    assert default_description("nfs", None) == "gssproxy-py:nfs"
    podman = tmp_path / "containerenv"
    podman.write_text('engine="podman-4.3"\nname="web1"\nid="abc"\n')
    assert container_name({}, str(podman), absent) == "web1"
    assert default_description("nfs", "web1") == "gssproxy-py:web1:nfs"
    assert container_name({"container": "systemd-nspawn"}, absent, absent) == os.uname().nodename


def test_explain_with_a_named_network_namespace(tmp_path: Path) -> None:
    """Files stand in for /run/netns entries: matching compares inodes."""
    (tmp_path / "tenant1").touch()
    (tmp_path / "tenant2").touch()
    config = load_config_text(
        "[service/t1]\n  mechs = krb5\n  euid = 0\n  netns = tenant1\n\n"
        "[service/rest]\n  mechs = krb5\n  euid = 0\n  netns = tenant2\n",
        "x.conf",
        default_socket=SOCK,
    )
    common = {"uid": 0, "gid": 0, "program": None, "socket_path": SOCK, "default_socket": SOCK}
    winner, rows, who = explain(config, netns="tenant2", netns_dir=str(tmp_path), **common)
    assert winner is not None and winner.name == "rest"
    assert {s.name: w for s, w in rows}["t1"] == "requires network namespace tenant1"
    assert "network namespace tenant2" in who
    winner, _, _ = explain(config, netns_dir=str(tmp_path), **common)
    assert winner is None  # this process is in neither
    with pytest.raises(ConfigError, match="no network namespace named 'nowhere'"):
        explain(config, netns="nowhere", netns_dir=str(tmp_path), **common)
