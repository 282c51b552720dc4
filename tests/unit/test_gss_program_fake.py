"""Program 400112 on a fake GSS backend: no KDC, no libgssapi calls.

`FakeGss` stands in for `gssproxy_py.gss.api` (the only module that calls
python-gssapi): names are strings, credentials small objects whose export
token says who they are, contexts complete in one step. On it the tests
check what the procedure layer decides by itself: the rows against the IDL,
failure results, the no-service rule, handle binding to uid and keytab,
policy gates, option parsing, and the inline rule (a call that reaches a
step that may wait continues on a thread from there, nothing runs twice).
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import logging
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py import compiled
from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.model import Config, CredUsage
from gssproxy_py.gss import api, engine, localname, options
from gssproxy_py.gss import procedures as procs
from gssproxy_py.gss.inline import Continuation, Steps, run_to_end, start
from gssproxy_py.gss.program import gss_proxy_service
from gssproxy_py.gss.status import (
    EACCES,
    GSS_S_COMPLETE,
    GSS_S_FAILURE,
    GSS_S_NO_CRED,
    GSS_S_UNAUTHORIZED,
    GssFailure,
)
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.rpc.dispatch import CallInfo, Pending, ProgramService
from gssproxy_py.vocab import oids
from gssproxy_py.xdr.runtime import Encoder
from tests.support.calls import gss_call_info

LOG = logging.LoggerAdapter(logging.getLogger("test.gss.fake"), {})
IDL = gp.GSSPROXY_PROGRAM.versions[gp.GSSPROXYVERS].procedures


# -- the fake backend ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FakeName:
    value: bytes


@dataclasses.dataclass
class FakeCreds:
    name: bytes
    usage: CredUsage
    store: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass
class FakeCtx:
    initiator: bytes


class FakeGss:
    """The subset of `gss.api` the procedures use, recording every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lifetime = 36000
        #: display_name calls, apart from `calls`: names are displayed by
        #: the conversions and log lines too, not only by the procedures.
        self.displayed = 0

    def _seen(self, what: str) -> None:
        self.calls.append(what)

    # names
    def import_name(self, value: bytes, name_type: bytes) -> FakeName:
        return FakeName(value.rstrip(b"\0"))

    def canonicalize(self, name: FakeName, mech: bytes) -> FakeName:
        return name

    def display_name(self, name: FakeName) -> tuple[bytes, bytes]:
        self.displayed += 1
        return name.value, oids.NT_KRB5_PRINCIPAL

    def export_name(self, name: FakeName) -> bytes:
        return b"exported:" + name.value

    def export_name_composite(self, name: FakeName) -> bytes:
        return b""

    # credentials
    def acquire_cred_from(
        self, store: dict[str, str], name: FakeName | None, usage: CredUsage, mech: bytes
    ) -> FakeCreds:
        self._seen("acquire_cred_from")
        who = name.value if name is not None else b"svc@R"
        return FakeCreds(who, usage, tuple(sorted(store.items())))

    def export_cred(self, creds: FakeCreds) -> bytes:
        return b"cred:%d:%s" % (int(creds.usage), creds.name)

    def import_cred(self, token: bytes) -> FakeCreds:
        self._seen("import_cred")
        _, usage, name = token.split(b":", 2)
        return FakeCreds(name, CredUsage(int(usage)))

    def inquire_cred(self, creds: FakeCreds) -> api.CredInfo:
        element = api.CredElementInfo(
            oids.KRB5,
            FakeName(creds.name),  # type: ignore[arg-type]
            creds.usage,
            self.lifetime,
            self.lifetime,
        )
        return api.CredInfo(FakeName(creds.name), self.lifetime, creds.usage, (element,))  # type: ignore[arg-type]

    def impersonator(self, creds: FakeCreds) -> str | None:
        return None

    # contexts
    def accept_sec_context(
        self, token: bytes, creds: FakeCreds, context: object, bindings: object
    ) -> api.StepResult:
        self._seen("accept_sec_context")
        ctx = FakeCtx(initiator=token)
        return api.StepResult(ctx, b"ap-rep", oids.KRB5, 0, False, None, FakeName(token))  # type: ignore[arg-type]

    def init_sec_context(self, *args: object) -> api.StepResult:
        self._seen("init_sec_context")
        return api.StepResult(FakeCtx(b"me"), b"ap-req", oids.KRB5, 0, False)  # type: ignore[arg-type]

    def inquire_context(self, context: FakeCtx, initiator: FakeName | None = None) -> None:
        return None

    def export_sec_context(self, context: FakeCtx) -> bytes:
        return b"ctx:" + context.initiator

    def export_lucid(self, context: FakeCtx) -> FakeCtx:
        return context

    def import_sec_context(self, token: bytes) -> FakeCtx:
        return FakeCtx(token.removeprefix(b"ctx:"))

    def describe_mechs(self) -> tuple[tuple[api.MechDescription, ...], tuple[()]]:
        self._seen("describe_mechs")
        mech = api.MechDescription(oids.KRB5, (), (), (), b"GS2-KRB5", b"krb5", b"Kerberos 5")
        return (mech,), ()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGss:
    """The fake installed in place of `gss.api`; no krb5 profile is held."""
    return install_fake(monkeypatch, tmp_path, FakeGss())


def install_fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backend: FakeGss) -> FakeGss:
    """`backend` in place of `gss.api` (also for tests/conformance/test_direct_path.py)."""
    (tmp_path / "krb5.conf").write_text("")
    monkeypatch.setenv("KRB5_CONFIG", str(tmp_path / "krb5.conf"))
    monkeypatch.setenv("KRB5RCACHEDIR", str(tmp_path))
    monkeypatch.setattr(engine, "hold_profile", lambda: None)
    for name in dir(backend):
        if not name.startswith("_") and hasattr(api, name):
            monkeypatch.setattr(api, name, getattr(backend, name))
    monkeypatch.setattr(localname, "localname", lambda *a: b"root")
    # The kernel's lucid format reads MIT's key structures; the fake has none.
    monkeypatch.setattr(procs, "format_linux_lucid_v1", lambda ctx: b"lucid:" + ctx.initiator)
    return backend


def _config(tmp_path: Path, extra: str = "") -> Config:
    return load_config_text(
        f"""
[gssproxy]
  state_dir = {tmp_path}/state
[service/nfs]
  mechs = krb5
  cred_store = keytab:{tmp_path}/nfs.keytab
  euid = 0
  trusted = yes
  kernel_nfsd = yes
[service/web]
  mechs = krb5
  cred_store = keytab:{tmp_path}/web.keytab
  cred_usage = accept
  euid = 33
[service/users]
  mechs = krb5
  cred_store = ccache:FILE:{tmp_path}/cc_%U
  euid = 1000
  allow_any_uid = yes
{extra}
"""
    )


class Program:
    """The real program 400112 over the fake backend, called as a given uid."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.service: ProgramService = gss_proxy_service(config)

    def info(self, proc: int, service: str | None, uid: int) -> CallInfo:
        return gss_call_info(self.config, proc, service=service, uid=uid, log=LOG)

    def threaded(self, proc: int, arg: Any, *, service: str | None, uid: int = 0) -> Any:
        handler = self.service.handler(1, proc)
        assert handler is not None
        return asyncio.run(handler(self.info(proc, service, uid), arg))

    def immediate(self, proc: int, arg: Any, *, service: str | None, uid: int = 0) -> Any:
        """The immediate handler; a `Pending` result is finished here too and
        returned as ("pending", result)."""
        handler = self.service.immediate_handler(1, proc)
        assert handler is not None
        outcome = handler(self.info(proc, service, uid), arg)
        if isinstance(outcome, Pending):
            return "pending", asyncio.run(outcome.run())  # type: ignore[arg-type]
        return outcome

    def close(self) -> None:
        assert self.service.close is not None
        self.service.close()


@pytest.fixture
def program(fake: FakeGss, tmp_path: Path) -> Iterator[Program]:
    p = Program(_config(tmp_path))
    yield p
    p.close()


def _call_ctx(*opts: gp.GssxOption) -> gp.GssxCallCtx:
    return gp.GssxCallCtx(locale=b"", server_ctx=b"", options=opts)


KERNEL = _call_ctx(
    gp.GssxOption(b"exported_context_type\0", b"linux_lucid_v1\0"),
    gp.GssxOption(b"exported_creds_type\0", b"linux_creds_v1\0"),
)


def _accept(token: bytes, call_ctx: gp.GssxCallCtx | None = None) -> gp.GssxArgAcceptSecContext:
    return gp.GssxArgAcceptSecContext(
        call_ctx=call_ctx or _call_ctx(),
        context_handle=None,
        cred_handle=None,
        input_token=token,
        input_cb=None,
        ret_deleg_cred=False,
        options=(),
    )


def _acquire(
    handle: gp.GssxCred | None = None, *opts: gp.GssxOption, usage: int = 3
) -> gp.GssxArgAcquireCred:
    return gp.GssxArgAcquireCred(
        call_ctx=_call_ctx(),
        input_cred_handle=handle,
        add_cred_to_input_handle=False,
        desired_name=None,
        time_req=0,
        desired_mechs=(),
        cred_usage=gp.GssxCredUsage(usage),
        initiator_time_req=0,
        acceptor_time_req=0,
        options=opts,
    )


# -- the rows ----------------------------------------------------------------------


def handler_hints(handler: Callable[..., object]) -> dict[str, Any]:
    """typing.get_type_hints of a handler; one compiled with mypyc keeps no
    annotations, so theirs are read from gss/procedures.py and evaluated
    there."""
    if isinstance(handler, types.FunctionType):
        return typing.get_type_hints(handler)
    source = compiled.source_of(procs.__name__)
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name == handler.__name__:
            namespace = vars(procs)
            hints = {
                a.arg: eval(ast.unparse(a.annotation), namespace)
                for a in node.args.args
                if a.annotation
            }
            assert node.returns is not None
            return {**hints, "return": eval(ast.unparse(node.returns), namespace)}
    raise AssertionError(f"{handler.__name__} is not in {source}")


def test_one_row_per_procedure_the_idl_declares() -> None:
    assert [p.number for p in procs.PROCEDURES] == sorted(n for n in IDL if n != 0)
    for row in procs.PROCEDURES:
        declared = IDL[row.number]
        assert row.arg is declared.arg_type, declared.name
        assert row.result is declared.res_type, declared.name
        hints = handler_hints(row.handler)
        assert hints["arg"] is row.arg, declared.name
        assert hints["return"] is row.result, declared.name


def test_each_failure_result_carries_the_status_and_encodes() -> None:
    status = gp.GssxStatus(GSS_S_FAILURE, oids.KRB5, 5, b"failure\0", b"why\0", b"", ())
    for row in procs.PROCEDURES:
        result = row.failure(status)
        assert isinstance(result, row.result)
        assert result.status == status  # type: ignore[attr-defined]
        IDL[row.number].encode_res(Encoder(), result)  # every other field empty but valid
    accept = next(r for r in procs.PROCEDURES if r.number == gp.GSSX_ACCEPT_SEC_CONTEXT)
    # The kernel reads output_token even on failure.
    assert accept.failure(status).output_token == b""


def test_inline_rows_are_the_ones_that_need_no_kdc_to_start() -> None:
    inline = {IDL[r.number].name for r in procs.PROCEDURES if r.inline}
    assert inline == {
        "GSSX_INDICATE_MECHS",
        "GSSX_GET_CALL_CONTEXT",
        "GSSX_ACQUIRE_CRED",
        "GSSX_ACCEPT_SEC_CONTEXT",
        "GSSX_RELEASE_HANDLE",
        "GSSX_GET_MIC",
        "GSSX_VERIFY",
        "GSSX_WRAP",
        "GSSX_UNWRAP",
        "GSSX_WRAP_SIZE_LIMIT",
    }


def test_a_caller_without_a_service_is_refused_with_the_reason(program: Program) -> None:
    for proc in (gp.GSSX_ACCEPT_SEC_CONTEXT, gp.GSSX_INIT_SEC_CONTEXT):
        row = next(r for r in procs.PROCEDURES if r.number == proc)
        arg = _accept(b"t") if proc == gp.GSSX_ACCEPT_SEC_CONTEXT else None
        res = program.threaded(proc, arg, service=None, uid=4242)
        assert isinstance(res, row.result)
        assert (res.status.major_status, res.status.minor_status) == (GSS_S_NO_CRED, EACCES)
        assert res.status.minor_status_string == b"no service for uid 4242\0"


def test_an_exception_becomes_the_rows_failure_result(
    program: Program, fake: FakeGss, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> object:
        raise GssFailure(GSS_S_FAILURE, 7, "the mech said no")

    monkeypatch.setattr(api, "accept_sec_context", broken)
    res = program.threaded(gp.GSSX_ACCEPT_SEC_CONTEXT, _accept(b"t"), service="nfs")
    assert isinstance(res, gp.GssxResAcceptSecContext)
    assert (res.status.major_status, res.status.minor_status) == (GSS_S_FAILURE, 7)
    assert res.status.minor_status_string == b"the mech said no\0"
    assert res.output_token == b"" and res.context_handle is None


# -- the inline rule -------------------------------------------------------------------


def test_a_kernel_accept_continues_on_a_thread_without_repeating_the_accept(
    program: Program, fake: FakeGss
) -> None:
    # First call: the acquire cache is cold, so the call leaves the loop
    # before the accept; the continuation runs it once.
    tag, first = program.immediate(
        gp.GSSX_ACCEPT_SEC_CONTEXT, _accept(b"alice@R", KERNEL), service="nfs"
    )
    assert tag == "pending" and first.status.major_status == GSS_S_COMPLETE
    assert fake.calls.count("accept_sec_context") == 1
    # Second call, a new initiator: credentials are cached, the accept runs on
    # the loop, the linux_creds lookup (NSS) is not cached: it continues on
    # a thread after the accept, which consumed the token and is not repeated.
    fake.calls.clear()
    tag, second = program.immediate(
        gp.GSSX_ACCEPT_SEC_CONTEXT, _accept(b"bob@R", KERNEL), service="nfs"
    )
    assert tag == "pending" and second.status.major_status == GSS_S_COMPLETE
    assert fake.calls.count("accept_sec_context") == 1
    creds = options.find_option(second.options, options.LINUX_CREDS_V1)
    assert creds is not None and creds[:8] == b"\0" * 8  # root: uid 0, gid 0
    # Third call, same initiator: everything known, finished on the loop.
    fake.calls.clear()
    third = program.immediate(gp.GSSX_ACCEPT_SEC_CONTEXT, _accept(b"bob@R", KERNEL), service="nfs")
    assert isinstance(third, gp.GssxResAcceptSecContext)
    assert fake.calls == ["accept_sec_context"]
    assert third.options == second.options


def test_indicate_mechs_describes_once_then_answers_on_the_loop(
    program: Program, fake: FakeGss
) -> None:
    arg = gp.GssxArgIndicateMechs(call_ctx=_call_ctx())
    tag, first = program.immediate(gp.GSSX_INDICATE_MECHS, arg, service="nfs")
    assert tag == "pending" and first.mechs[0].mech == oids.KRB5
    again = program.immediate(gp.GSSX_INDICATE_MECHS, arg, service="nfs")
    assert again == first and fake.calls == ["describe_mechs"]


def test_start_stops_at_the_wait_point_and_finish_goes_on_from_there() -> None:
    trail: list[str] = []

    async def call(steps: Steps) -> str:
        trail.append("before")
        await steps.may_wait("a KDC")
        trail.append("after")
        await steps.may_wait("again")  # on the thread: nothing happens
        return "done"

    steps = Steps(inline=True)
    rest = start(call(steps), steps)
    assert isinstance(rest, Continuation) and rest.reason == "a KDC"
    assert trail == ["before"]
    assert rest.finish() == "done" and trail == ["before", "after"]
    threaded = Steps(inline=False)
    assert start(call(threaded), threaded) == "done"


def test_a_procedure_awaiting_anything_else_is_refused() -> None:
    async def rogue() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="not a wait point"):
        start(rogue(), Steps(inline=True))
    with pytest.raises(RuntimeError, match="not a wait point"):
        run_to_end(rogue())


# -- credentials: binding, reuse, policy ----------------------------------------------------


def _cred(program: Program, service: str, uid: int) -> gp.GssxCred:
    res = program.threaded(gp.GSSX_ACQUIRE_CRED, _acquire(), service=service, uid=uid)
    assert res.status.major_status == GSS_S_COMPLETE, res.status
    assert res.output_cred_handle is not None
    return res.output_cred_handle  # type: ignore[no-any-return]


def test_a_handle_is_returned_as_is_while_good_for_the_same_uid(
    program: Program, fake: FakeGss, caplog: pytest.LogCaptureFixture
) -> None:
    handle = _cred(program, "users", 1000)
    caplog.set_level(logging.INFO, logger="test.gss.fake")
    res = program.threaded(gp.GSSX_ACQUIRE_CRED, _acquire(handle), service="users", uid=1000)
    assert res.output_cred_handle == handle
    assert "still good; returned as is" in caplog.text
    # Near expiry (less than min_lifetime left): not returned as is.
    fake.lifetime = 0
    caplog.clear()
    program.threaded(gp.GSSX_ACQUIRE_CRED, _acquire(handle), service="users", uid=1000)
    assert "near expiry; acquiring anew" in caplog.text


def test_the_accept_audit_line_displays_the_initiator_only_when_written(
    program: Program, fake: FakeGss, caplog: pytest.LogCaptureFixture
) -> None:
    # At debug level 0 the line is not written: no display_name (a GSSAPI
    # call per accept) for it. The fake's inquire_context says nothing, so
    # the reply's names display nothing either; the first accept acquires
    # the service's credential, whose name is displayed once for the cache.
    caplog.set_level(logging.WARNING, logger="test.gss.fake")
    program.threaded(gp.GSSX_ACCEPT_SEC_CONTEXT, _accept(b"carol@R"), service="web", uid=33)
    fake.displayed = 0
    res = program.threaded(gp.GSSX_ACCEPT_SEC_CONTEXT, _accept(b"alice@R"), service="web", uid=33)
    assert res.status.major_status == GSS_S_COMPLETE
    assert fake.displayed == 0 and "accepted a context" not in caplog.text
    caplog.set_level(logging.INFO, logger="test.gss.fake")
    res = program.threaded(gp.GSSX_ACCEPT_SEC_CONTEXT, _accept(b"bob@R"), service="web", uid=33)
    assert res.status.major_status == GSS_S_COMPLETE
    assert "accepted a context from bob@R for service 'web'" in caplog.text
    assert fake.displayed == 1


def test_a_handle_does_not_open_for_another_uid_or_keytab(program: Program) -> None:
    handle = _cred(program, "users", 1000)
    export = gp.GssxArgExportCred(
        call_ctx=_call_ctx(), input_cred_handle=handle, cred_usage=gp.GssxCredUsage(3), options=()
    )
    ok = program.threaded(gp.GSSX_EXPORT_CRED, export, service="users", uid=1000)
    assert ok.status.major_status == GSS_S_COMPLETE
    for service, uid in (("users", 1001), ("web", 1000)):
        res = program.threaded(gp.GSSX_EXPORT_CRED, export, service=service, uid=uid)
        assert (res.status.major_status, res.status.minor_status) == (GSS_S_NO_CRED, EACCES)


def test_the_service_usage_narrows_the_callers(program: Program) -> None:
    res = program.threaded(gp.GSSX_ACQUIRE_CRED, _acquire(usage=1), service="web", uid=33)
    assert (res.status.major_status, res.status.minor_status) == (GSS_S_FAILURE, EACCES)
    assert b"only accept credentials" in res.status.minor_status_string


def test_impersonate_name_needs_the_service_to_allow_it(program: Program) -> None:
    handle = _cred(program, "users", 1000)
    arg = dataclasses.replace(
        _acquire(handle, gp.GssxOption(b"acquire_type\0", b"impersonate_name\0")),
        desired_name=gp.GssxName(b"bob@R", oids.NT_KRB5_PRINCIPAL, b"", b"", (), ()),
    )
    res = program.threaded(gp.GSSX_ACQUIRE_CRED, arg, service="users", uid=1000)
    assert res.status.major_status == GSS_S_UNAUTHORIZED
    assert b"protocol transition" in res.status.minor_status_string


def test_a_user_name_lookup_sends_an_inline_acquire_to_a_thread(
    fake: FakeGss, tmp_path: Path
) -> None:
    extra = f"""
[service/imp]
  mechs = krb5
  socket = {tmp_path}/imp.sock
  cred_store = keytab:{tmp_path}/imp.keytab
  euid = 500
  allow_any_uid = yes
  impersonate = yes
  cred_usage = initiate
"""
    config = _config(tmp_path, extra)
    gss_engine = engine.GssEngine(config)
    steps = Steps(inline=True)
    req = procs.Request(
        service=config.service("imp"), uid=1000, config=config, log=LOG, steps=steps
    )
    try:
        outcome = start(procs.proc_acquire_cred(gss_engine, req, _acquire(usage=1)), steps)
        assert isinstance(outcome, Continuation)
        assert outcome.reason == "user name lookup (NSS)"
        outcome.close()
    finally:
        gss_engine.close()


def test_reload_is_the_one_way_the_engine_changes(fake: FakeGss, tmp_path: Path) -> None:
    """`GssEngine.reload`: cached credentials and inline verdicts are
    forgotten, and the threads follow `worker_threads`."""
    config = _config(tmp_path)
    gss_engine = engine.GssEngine(config)
    try:
        req = procs.Request(
            service=config.service("users"),
            uid=1000,
            config=config,
            log=LOG,
            steps=Steps(inline=False),
        )
        for _ in range(2):
            run_to_end(procs.proc_acquire_cred(gss_engine, req, _acquire()))
        assert fake.calls.count("acquire_cred_from") == 1  # the second came from the cache
        assert gss_engine.inline.allowed(config.service("users"))
        users = config.service("users")
        assert users is not None
        threads = gss_engine.executor_for(config, users)
        bigger = dataclasses.replace(
            config, globals=dataclasses.replace(config.globals, worker_threads=7)
        )
        gss_engine.reload(bigger)
        assert len(gss_engine.credentials.acquired) == 0
        run_to_end(procs.proc_acquire_cred(gss_engine, req, _acquire()))
        assert fake.calls.count("acquire_cred_from") == 2
        now = gss_engine.executor_for(bigger, users)
        assert now is not threads and now.threads == 7 and now.name == "gss-users"
        # Each service has its own threads.
        web = bigger.service("web")
        assert web is not None
        assert gss_engine.executor_for(bigger, web) is not now
    finally:
        gss_engine.close()
