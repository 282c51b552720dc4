"""Tests for option parsing and validation (config/options.py, config/model.py).

Every documented option, its default, and every error case; errors must name
file, line and option.
"""

from __future__ import annotations

import pwd

import pytest

from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.model import (
    Config,
    CredUsage,
    GlobalSettings,
    Mech,
    OptionOrigin,
    PinSource,
    PinSourceKind,
    SelinuxContext,
    Service,
)
from gssproxy_py.errors import ConfigError

NAME = "t.conf"
# Extra service lines start at line 4.
BASE = "[service/s]\nmechs = krb5\neuid = 0\n"
BOOL_OPTIONS = [
    "allow_any_uid",
    "trusted",
    "impersonate",
    "allow_protocol_transition",
    "allow_constrained_delegation",
    "allow_client_ccache_sync",
    "kernel_nfsd",
]
TRUE_WORDS = ["1", "on", "true", "yes", "YES", "True", "On"]
FALSE_WORDS = ["0", "off", "false", "no", "NO", "False", "Off"]


def load(text: str) -> Config:
    return load_config_text(text, NAME)


def svc(*lines: str) -> Service:
    config = load(BASE + "".join(line + "\n" for line in lines))
    assert len(config.services) == 1
    return config.services[0]


def glob(*lines: str) -> GlobalSettings:
    text = "[gssproxy]\n" + "".join(line + "\n" for line in lines) + BASE
    return load(text).globals


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value


def assert_located(exc: ConfigError, line: int, option: str | None, fragment: str) -> None:
    assert exc.file == NAME
    assert exc.line == line
    assert exc.option == option
    prefix = f"{NAME}:{line}: " + (f"option '{option}': " if option else "")
    assert str(exc).startswith(prefix), str(exc)
    assert fragment in exc.message, exc.message


def svc_error(*lines: str) -> ConfigError:
    return error(BASE + "".join(line + "\n" for line in lines))


def glob_error(*lines: str) -> ConfigError:
    # [gssproxy] lines start at line 2.
    return error("[gssproxy]\n" + "".join(line + "\n" for line in lines) + BASE)


# --- service defaults -------------------------------------------------------


def test_minimal_service_defaults() -> None:
    s = svc()
    assert s == Service(
        name="s",
        euid=0,
        mechs=(Mech.KRB5,),
        file=NAME,
        line=1,
        cred_store=(),
        krb5_principal=None,
        cred_usage=CredUsage.BOTH,
        socket=None,
        program=None,
        selinux_context=None,
        allow_any_uid=False,
        trusted=False,
        impersonate=False,
        allow_protocol_transition=False,
        allow_constrained_delegation=False,
        allow_client_ccache_sync=False,
        kernel_nfsd=False,
        filter_flags=1,
        enforce_flags=0,
        min_lifetime=15,
        netns=(),
        netns_all=False,
        pkcs11_module=None,
        pkcs11_uris=(),
        pkcs11_pin=None,
        origins=(OptionOrigin("mechs", NAME, 2), OptionOrigin("euid", NAME, 3)),
    )


def test_cred_usage_wire_values() -> None:
    assert [(u.name, int(u)) for u in CredUsage] == [("INITIATE", 1), ("ACCEPT", 2), ("BOTH", 3)]


# --- euid -------------------------------------------------------------------


def test_euid_number_and_name() -> None:
    assert load("[service/s]\nmechs = krb5\neuid = 1234\n").services[0].euid == 1234
    assert load("[service/s]\nmechs = krb5\neuid = 4294967294\n").services[0].euid == 4294967294
    root = pwd.getpwuid(0).pw_name
    assert load(f"[service/s]\nmechs = krb5\neuid = {root}\n").services[0].euid == 0


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("no-such-user-xyz", "unknown user 'no-such-user-xyz'"),
        ("4294967295", "out of range"),
        ("-1", "unknown user '-1'"),
    ],
)
def test_euid_errors(value: str, fragment: str) -> None:
    exc = error(f"[service/s]\nmechs = krb5\neuid = {value}\n")
    assert_located(exc, 3, "euid", fragment)


def test_euid_required() -> None:
    exc = error("# c\n[service/s]\nmechs = krb5\nallow_any_uid = yes\n")
    assert_located(exc, 2, "euid", "required option is missing from [service/s]")


# --- mechs ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["krb5", "krb5,krb5", "krb5 , krb5", " krb5\tkrb5"])
def test_mechs_list(value: str) -> None:
    config = load(f"[service/s]\neuid = 0\nmechs = {value}\n")
    assert config.services[0].mechs == (Mech.KRB5,)


@pytest.mark.parametrize("value", ["spnego", "krb5,spnego", "KRB5", "krb5 ntlm"])
def test_mechs_unknown(value: str) -> None:
    exc = error(f"[service/s]\neuid = 0\nmechs = {value}\n")
    assert_located(exc, 3, "mechs", "unknown mechanism")


def test_mechs_required() -> None:
    exc = error("[service/s]\neuid = 0\n")
    assert_located(exc, 1, "mechs", "required option is missing")


# --- cred_store ---------------------------------------------------------------


def test_cred_store_multi_valued_in_order() -> None:
    s = svc(
        "cred_store = keytab:/etc/krb5.keytab",
        "cred_store = ccache:FILE:/var/lib/gssproxy/clients/krb5cc_%U",
        "cred_store = client_keytab : /var/lib/gssproxy/clients/%u.keytab ",
        "cred_store = keytab:/second",
        "cred_store = rcache:none%%",
    )
    assert s.cred_store == (
        ("keytab", "/etc/krb5.keytab"),
        ("ccache", "FILE:/var/lib/gssproxy/clients/krb5cc_%U"),
        ("client_keytab", "/var/lib/gssproxy/clients/%u.keytab"),
        ("keytab", "/second"),
        ("rcache", "none%%"),
    )
    assert s.cred_store_values("keytab") == ("/etc/krb5.keytab", "/second")
    assert s.cred_store_values("nothing") == ()
    assert s.origin("cred_store") == OptionOrigin("cred_store", NAME, 4)


def test_cred_store_merges_across_repeated_section() -> None:
    text = (
        "[service/s]\nmechs = krb5\ncred_store = keytab:/a\n"
        "[gssproxy]\n"
        "[service/s]\neuid = 0\ncred_store = ccache:/b\n"
    )
    assert load(text).services[0].cred_store == (("keytab", "/a"), ("ccache", "/b"))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("/etc/krb5.keytab", "no ':'"),
        (":/etc/krb5.keytab", "both parts non-empty"),
        ("keytab:", "both parts non-empty"),
        ("keytab:   ", "both parts non-empty"),
        ("key tab:/x", "invalid cred_store key"),
        ("keytab:/k/%x", "unknown escape '%x'"),
        ("keytab:/k/%", "'%' at the end"),
    ],
)
def test_cred_store_errors(value: str, fragment: str) -> None:
    exc = svc_error("cred_store = keytab:/ok", f"cred_store = {value}")
    assert_located(exc, 5, "cred_store", fragment)


# --- simple strings and enums ---------------------------------------------------


def test_krb5_principal() -> None:
    assert svc("krb5_principal = nfs/host.example.com@EXAMPLE.COM").krb5_principal == (
        "nfs/host.example.com@EXAMPLE.COM"
    )


@pytest.mark.parametrize(
    ("value", "usage"),
    [
        ("initiate", CredUsage.INITIATE),
        ("INITIATE", CredUsage.INITIATE),
        ("accept", CredUsage.ACCEPT),
        ("Accept", CredUsage.ACCEPT),
        ("both", CredUsage.BOTH),
        ("BoTh", CredUsage.BOTH),
    ],
)
def test_cred_usage(value: str, usage: CredUsage) -> None:
    assert svc(f"cred_usage = {value}").cred_usage is usage


def test_cred_usage_error() -> None:
    assert_located(svc_error("cred_usage = initiator"), 4, "cred_usage", "initiate, accept or both")


# --- socket and program ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/gssproxy.sock", "/run/gssproxy.sock"),
        ("/run//gssproxy.sock", "/run/gssproxy.sock"),
        ("/var/run/./x/../gssproxy.sock", "/var/run/gssproxy.sock"),
    ],
)
def test_socket_normalised(value: str, expected: str) -> None:
    assert svc(f"socket = {value}").socket == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("run/gssproxy.sock", "absolute path"),
        ("@abstract", "absolute path"),
        ("/" + "x" * 107, "longer than 107 bytes"),
    ],
)
def test_socket_errors(value: str, fragment: str) -> None:
    assert_located(svc_error(f"socket = {value}"), 4, "socket", fragment)


def test_socket_length_limit_is_inclusive() -> None:
    path = "/" + "x" * 106
    assert svc(f"socket = {path}").socket == path


def test_program() -> None:
    s = svc("program = /usr/sbin/rpc.gssd")
    assert s.program == "/usr/sbin/rpc.gssd"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("usr/bin/x", "absolute path"), ("/usr/bin/a|b", "must not contain '|'")],
)
def test_program_errors(value: str, fragment: str) -> None:
    assert_located(svc_error(f"program = {value}"), 4, "program", fragment)


def test_program_not_canonical_warns() -> None:
    config = load(BASE + "program = /usr/bin/../bin/x\n")
    assert config.services[0].program == "/usr/bin/../bin/x"
    assert config.warnings == (
        f"{NAME}:4: option 'program': '/usr/bin/../bin/x' is not in canonical form; it is "
        "compared with the resolved path of the client executable and may never match",
    )


# --- selinux_context --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("system_u:system_r:gssd_t", SelinuxContext("system_u", "system_r", "gssd_t")),
        (
            "system_u:system_r:gssd_t:s0-s0:c0.c1023",
            SelinuxContext("system_u", "system_r", "gssd_t", "s0-s0:c0.c1023"),
        ),
        ("u:r:t:s0", SelinuxContext("u", "r", "t", "s0")),
    ],
)
def test_selinux_context(value: str, expected: SelinuxContext) -> None:
    ctx = svc(f"selinux_context = {value}").selinux_context
    assert ctx == expected
    assert str(ctx) == value


@pytest.mark.parametrize("value", ["u:r", "u", "u::t", ":r:t", "u:r:t:", "u:r:"])
def test_selinux_context_errors(value: str) -> None:
    exc = svc_error(f"selinux_context = {value}")
    assert_located(exc, 4, "selinux_context", "user:role:type[:range]")


# --- booleans ------------------------------------------------------------------------


@pytest.mark.parametrize("option", BOOL_OPTIONS)
@pytest.mark.parametrize("word", TRUE_WORDS)
def test_bool_true(option: str, word: str) -> None:
    s = svc(f"{option} = {word}")
    assert getattr(s, option) is True
    others = [o for o in BOOL_OPTIONS if o != option]
    assert all(getattr(s, o) is False for o in others)


@pytest.mark.parametrize("option", BOOL_OPTIONS)
@pytest.mark.parametrize("word", FALSE_WORDS)
def test_bool_false(option: str, word: str) -> None:
    assert getattr(svc(f"{option} = {word}"), option) is False


@pytest.mark.parametrize("option", BOOL_OPTIONS)
@pytest.mark.parametrize("word", ["ture", "y", "2", "enabled", "yes please"])
def test_bool_garbage_is_an_error(option: str, word: str) -> None:
    exc = svc_error("# pad", f"{option} = {word}")
    assert_located(exc, 5, option, "expected a boolean")
    assert repr(word) in exc.message


# --- flags ------------------------------------------------------------------------------


def test_flags_defaults_and_values() -> None:
    s = svc("filter_flags = -DELEGATE +MUTUAL_AUTH", "enforce_flags = +INTEGRITIY,+0x100")
    assert s.filter_flags == 2
    assert s.enforce_flags == 32 | 0x100
    assert svc("filter_flags = -DELEGATE").filter_flags == 0
    assert svc("filter_flags = +CONFIDENTIALITY").filter_flags == 17
    assert svc("enforce_flags = +integrity").enforce_flags == 32


@pytest.mark.parametrize("option", ["filter_flags", "enforce_flags"])
@pytest.mark.parametrize(
    ("value", "fragment"),
    [("DELEGATE", "must start with '+' or '-'"), ("+BOGUS", "unknown flag '+BOGUS'")],
)
def test_flags_errors(option: str, value: str, fragment: str) -> None:
    assert_located(svc_error(f"{option} = {value}"), 4, option, fragment)


# --- min_lifetime -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("15", 15), ("3600", 3600)])
def test_min_lifetime(value: str, expected: int) -> None:
    assert svc(f"min_lifetime = {value}").min_lifetime == expected


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "+5"])
def test_min_lifetime_errors(value: str) -> None:
    assert_located(svc_error(f"min_lifetime = {value}"), 4, "min_lifetime", "non-negative integer")


# --- netns -------------------------------------------------------------------------------


def test_netns_names_and_all() -> None:
    s = svc("netns = red, blue green,red")
    assert (s.netns, s.netns_all) == (("red", "blue", "green"), False)
    s = svc("netns = all")
    assert (s.netns, s.netns_all) == ((), True)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("all red", "'all' cannot be combined"),
        ("red/blue", "invalid network namespace name 'red/blue'"),
        ("..", "invalid network namespace name"),
        ("x" * 256, "invalid network namespace name"),
    ],
)
def test_netns_errors(value: str, fragment: str) -> None:
    assert_located(svc_error(f"netns = {value}"), 4, "netns", fragment)


# --- pkcs11 -----------------------------------------------------------------------------------


def test_pkcs11_options() -> None:
    s = svc(
        "pkcs11_module = /usr/lib/softhsm/libsofthsm2.so",
        "pkcs11_uri = pkcs11:token=a;object=k1",
        "pkcs11_uri = pkcs11:token=b;id=%01",
        "pkcs11_pin = keyring:gssproxy:softhsm",
    )
    assert s.pkcs11_module == "/usr/lib/softhsm/libsofthsm2.so"
    assert s.pkcs11_uris == ("pkcs11:token=a;object=k1", "pkcs11:token=b;id=%01")
    assert s.pkcs11_pin == PinSource(PinSourceKind.KEYRING, "gssproxy:softhsm")
    assert svc("pkcs11_pin = file:/etc/gssproxy/pin").pkcs11_pin == PinSource(
        PinSourceKind.FILE, "/etc/gssproxy/pin"
    )


def test_pkcs11_errors() -> None:
    assert_located(svc_error("pkcs11_module = libsofthsm2.so"), 4, "pkcs11_module", "absolute")
    exc = svc_error("pkcs11_uri = pkcs11:ok", "pkcs11_uri = PKCS11:token=x")
    assert_located(exc, 5, "pkcs11_uri", "starting with 'pkcs11:'")


@pytest.mark.parametrize(
    ("value", "fragment", "secret"),
    [
        ("123456", "(no scheme given)", "123456"),
        ("pin:9876", "(scheme 'pin')", "9876"),
        ("12:34", "(scheme not recognised)", "12"),
        ("keyring:", "(keyring: needs a value)", None),
        ("file:", "(file: needs a value)", None),
        ("file:relative/pin", "absolute path", "relative/pin"),
    ],
)
def test_pkcs11_pin_errors_do_not_echo_value(value: str, fragment: str, secret: str | None) -> None:
    exc = svc_error(f"pkcs11_pin = {value}")
    assert_located(exc, 4, "pkcs11_pin", fragment)
    if secret is not None:
        assert secret not in str(exc)


# --- removed, repeated, empty and unknown options ---------------------------------------------


@pytest.mark.parametrize(
    ("option", "advice"),
    [
        ("krb5_keytab", "krb5_keytab has been removed; use cred_store = keytab:/etc/k.keytab"),
        ("krb5_ccache", "krb5_ccache has been removed; use cred_store = ccache:/etc/k.keytab"),
        (
            "krb5_client_keytab",
            "krb5_client_keytab has been removed; use cred_store = client_keytab:/etc/k.keytab",
        ),
    ],
)
def test_removed_options(option: str, advice: str) -> None:
    exc = svc_error("cred_store = keytab:/x", f"{option} = /etc/k.keytab")
    assert_located(exc, 5, option, advice)
    assert exc.message == advice


def test_removed_option_with_empty_value() -> None:
    exc = svc_error("krb5_keytab =")
    assert_located(exc, 4, "krb5_keytab", "use cred_store = keytab:PATH")


@pytest.mark.parametrize(
    "option",
    [
        "euid",
        "mechs",
        "krb5_principal",
        "cred_usage",
        "socket",
        "program",
        "selinux_context",
        *BOOL_OPTIONS,
        "filter_flags",
        "enforce_flags",
        "min_lifetime",
        "netns",
        "pkcs11_module",
        "pkcs11_pin",
    ],
)
def test_single_valued_service_option_repeated(option: str) -> None:
    text = f"[service/s]\n{option} = a\n# pad\n{option} = b\nmechs = krb5\neuid = 0\n"
    if option in ("mechs", "euid"):
        text = f"[service/s]\n{option} = a\n# pad\n{option} = b\n"
    exc = error(text)
    assert_located(exc, 4, option, "set again in [service/s]; first set at t.conf:2")


def test_repeat_within_file_across_repeated_sections() -> None:
    text = BASE + "[gssproxy]\n[service/s]\neuid = 1\n"
    assert_located(error(text), 6, "euid", "first set at t.conf:3")


@pytest.mark.parametrize(
    "option", ["krb5_principal", "socket", "program", "netns", "cred_store", "pkcs11_uri"]
)
def test_empty_value_is_an_error(option: str) -> None:
    assert_located(svc_error(f"{option} ="), 4, option, "empty value")


def test_unknown_options_are_warnings_with_location() -> None:
    text = (
        "[gssproxy]\n"  # 1
        "worker_threads = 4\n"  # 2
        "euid = 0\n"  # 3
        "[service/s]\n"  # 4
        "mechs = krb5\n"  # 5
        "euid = 0\n"  # 6
        "frobnicate = 1\n"  # 7
        "debug = yes\n"  # 8
        "trustd = yes\n"  # 9
        "frobnicate = 2\n"  # 10
    )
    config = load(text)
    assert config.warnings == (
        "t.conf:2: option 'worker_threads': unknown in [gssproxy], ignored; "
        "did you mean 'worker threads'?",
        "t.conf:3: option 'euid': unknown in [gssproxy], ignored; "
        "it is a service option and has no effect here",
        "t.conf:7: option 'frobnicate': unknown in [service/s], ignored",
        "t.conf:8: option 'debug': unknown in [service/s], ignored; "
        "it is a [gssproxy] option and has no effect here",
        "t.conf:9: option 'trustd': unknown in [service/s], ignored; did you mean 'trusted'?",
    )
    assert config.globals.worker_threads == 5
    assert config.services[0].trusted is False


def test_option_names_are_case_sensitive() -> None:
    config = load(BASE + "Trusted = yes\n")
    assert config.services[0].trusted is False
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith("t.conf:4: option 'Trusted': unknown")


def test_no_services_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load("[gssproxy]\ndebug = yes\n")
    assert info.value.message == "no [service/NAME] sections configured in t.conf"


def test_service_order_and_names() -> None:
    text = (
        "[service/zeta]\nmechs = krb5\neuid = 1\n"
        "[service/alpha]\nmechs = krb5\neuid = 2\n"
        "[service/mid]\nmechs = krb5\neuid = 3\n"
        "[service/zeta]\nkernel_nfsd = yes\n"
    )
    config = load(text)
    assert [(s.name, s.line) for s in config.services] == [("zeta", 1), ("alpha", 4), ("mid", 7)]
    assert config.services[0].kernel_nfsd is True
    assert config.service("alpha") is config.services[1]
    assert config.service("nope") is None


# --- [gssproxy] ---------------------------------------------------------------------------------


def test_global_defaults() -> None:
    assert load(BASE).globals == GlobalSettings(
        debug_level=0,
        syslog_status=False,
        run_as_user=None,
        worker_threads=5,
        state_dir="/var/lib/gssproxy-py",
        max_record_size=1048576,
        max_calls_per_connection=16,
        call_timeout=10.0,
        use_gss_proxy_file="/proc/net/rpc/use-gss-proxy",
        origins=(),
    )
    assert glob() == load(BASE).globals


def test_global_options() -> None:
    g = glob(
        "debug = yes",
        "syslog_status = on",
        "run_as_user = gssproxy",
        "worker threads = 12",
        "state_dir = /srv/state",
        "max_record_size = 65536",
        "max_calls_per_connection = 1",
        "call_timeout = 2.5",
        "use_gss_proxy_file = /tmp/use-gss-proxy",
    )
    assert (
        g.debug_level,
        g.syslog_status,
        g.run_as_user,
        g.worker_threads,
        g.state_dir,
        g.max_record_size,
        g.max_calls_per_connection,
        g.call_timeout,
        g.use_gss_proxy_file,
    ) == (1, True, "gssproxy", 12, "/srv/state", 65536, 1, 2.5, "/tmp/use-gss-proxy")
    assert g.origins[3] == OptionOrigin("worker threads", NAME, 5)


def test_isolation_limits() -> None:
    g = glob(
        "max_connections = 100",
        "max_connections_per_uid = 7",
        "fd_reserve = 16",
        "input_budget = 4096",
        "input_budget_per_uid = 8192",
        "record_timeout = 2.5",
        "idle_connection_timeout = 0",
        "refusal_log_interval = 60",
    )
    assert (
        g.max_connections,
        g.max_connections_per_uid,
        g.fd_reserve,
        g.input_budget,
        g.input_budget_per_uid,
        g.record_timeout,
        g.idle_connection_timeout,
        g.refusal_log_interval,
    ) == (100, 7, 16, 4096, 8192, 2.5, 0.0, 60.0)
    assert glob("idle_connection_timeout = 30").idle_connection_timeout == 30.0


@pytest.mark.parametrize(
    ("lines", "level"),
    [
        ((), 0),
        (("debug = no",), 0),
        (("debug = yes",), 1),
        (("debug_level = 3",), 3),
        (("debug = yes", "debug_level = 0"), 0),
        (("debug_level = 2", "debug = yes"), 2),
        (("debug = no", "debug_level = 2"), 2),
    ],
)
def test_debug_level(lines: tuple[str, ...], level: int) -> None:
    assert glob(*lines).debug_level == level


@pytest.mark.parametrize(
    ("line", "option", "fragment"),
    [
        ("debug = maybe", "debug", "expected a boolean"),
        ("syslog_status = 2", "syslog_status", "expected a boolean"),
        ("debug_level = -1", "debug_level", "non-negative integer"),
        ("debug_level = high", "debug_level", "non-negative integer"),
        ("worker threads = 0", "worker threads", "at least 1"),
        ("worker threads = five", "worker threads", "non-negative integer"),
        ("state_dir = var/lib", "state_dir", "absolute path"),
        ("max_record_size = 4095", "max_record_size", "between 4096 and 16777216"),
        ("max_record_size = 16777217", "max_record_size", "between 4096 and 16777216"),
        ("max_record_size = 1M", "max_record_size", "non-negative integer"),
        ("max_calls_per_connection = 0", "max_calls_per_connection", "at least 1"),
        ("call_timeout = 0", "call_timeout", "greater than 0"),
        ("call_timeout = 0.0", "call_timeout", "greater than 0"),
        ("call_timeout = inf", "call_timeout", "number of seconds"),
        ("call_timeout = -1", "call_timeout", "number of seconds"),
        ("call_timeout = 1e3", "call_timeout", "number of seconds"),
        ("use_gss_proxy_file = proc/x", "use_gss_proxy_file", "absolute path"),
        ("run_as_user =", "run_as_user", "empty value"),
        ("max_connections = 0", "max_connections", "at least 1"),
        ("max_connections_per_uid = 0", "max_connections_per_uid", "at least 1"),
        ("fd_reserve = 15", "fd_reserve", "at least 16"),
        ("input_budget = 4095", "input_budget", "at least 4096"),
        ("input_budget_per_uid = 1M", "input_budget_per_uid", "non-negative integer"),
        ("record_timeout = 0", "record_timeout", "greater than 0"),
        ("idle_connection_timeout = -1", "idle_connection_timeout", "number of seconds"),
        ("refusal_log_interval = 0", "refusal_log_interval", "greater than 0"),
    ],
)
def test_global_errors(line: str, option: str, fragment: str) -> None:
    assert_located(glob_error(line), 2, option, fragment)


@pytest.mark.parametrize(("value", "expected"), [("4096", 4096), ("16777216", 16777216)])
def test_max_record_size_bounds(value: str, expected: int) -> None:
    assert glob(f"max_record_size = {value}").max_record_size == expected


def test_call_timeout_integer() -> None:
    assert glob("call_timeout = 30").call_timeout == 30.0


def test_global_repeat_is_an_error() -> None:
    exc = glob_error("worker threads = 2", "worker threads = 3")
    assert_located(exc, 3, "worker threads", "first set at t.conf:2")
