"""`gssproxy-py-call` (client/call_cli.py) against the in-test fake server.

Checks the argument the server receives (decoded with the generated decoder),
the printed reply (parsed back into the result it came from), and the exit
status and one-line message for each kind of failure.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.client.call_cli import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    main,
    run,
)
from gssproxy_py.client.values import default_of, value_from_json, value_to_json
from gssproxy_py.proto import gss_proxy as g
from gssproxy_py.xdr import decode_bytes, encode_bytes
from tests.unit.test_client_rpc import (
    Call,
    FakeServer,
    Script,
    accepted,
    answering,
    mark,
    parse_call,
    success,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
V1 = g.GSSPROXY_PROGRAM.versions[1]
KRB5 = bytes.fromhex("2a864886f712010202")


@pytest.fixture
def start_server() -> Iterator[Callable[[Script], FakeServer]]:
    d = Path(tempfile.mkdtemp(prefix="gpcli-"))
    servers: list[FakeServer] = []

    def start(script: Script) -> FakeServer:
        s = FakeServer(d / f"s{len(servers)}.sock", script)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()
    shutil.rmtree(d, ignore_errors=True)
    for s in servers:
        if s.errors:
            raise s.errors[0]


def results_server(results: dict[int, Any]) -> Script:
    """Answers procedure n with results[n] (or its default result), SUCCESS."""

    def reply(c: Call) -> bytes:
        proc = V1.procedures[c.proc]
        res = results.get(c.proc)
        if res is None and proc.res_type is not None:
            res = default_of(proc.res_type)
        return mark(success(c.xid, encode_bytes(proc.encode_res, res)))

    return answering(reply)


def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def received_arg(server: FakeServer, index: int = -1) -> Any:
    c = parse_call(server.records[index])
    return decode_bytes(V1.procedures[c.proc].decode_arg, c.args)


def mechs_result() -> g.GssxResIndicateMechs:
    mech = g.GssxMechInfo(
        KRB5,
        (bytes.fromhex("2a864886f71201020101"),),
        (),
        (),
        (),
        (),
        b"GS2-KRB5",
        b"krb5",
        b"Kerberos 5 GSS-API Mechanism",
        (),
    )
    return g.GssxResIndicateMechs(default_of(g.GssxStatus), (mech,), (), (), ())


# -- success ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["GSSX_INDICATE_MECHS", "indicate_mechs", "INDICATE_MECHS", "1"])
def test_indicate_mechs_with_no_argument(
    start_server: Callable[[Script], FakeServer], name: str
) -> None:
    srv = start_server(results_server({1: mechs_result()}))
    code, out, err = cli("--socket", str(srv.path), name)
    assert (code, err) == (EXIT_OK, "")
    shown = json.loads(out)
    assert shown["mechs"][0]["mech"] == {"oid": "1.2.840.113554.1.2.2", "hex": KRB5.hex()}
    assert shown["mechs"][0]["saslname_sasl_mech_name"] == "GS2-KRB5"
    assert shown["mechs"][0]["name_types"] == [
        {"oid": "1.2.840.113554.1.2.1.1", "hex": "2a864886f71201020101"}
    ]
    assert value_from_json(shown, g.GssxResIndicateMechs) == mechs_result()
    # The empty argument: an empty call_ctx, 12 zero bytes.
    assert parse_call(srv.records[0]).args == b"\0" * 12


def test_null(start_server: Callable[[Script], FakeServer]) -> None:
    srv = start_server(results_server({}))
    assert cli("--socket", str(srv.path), "NULL") == (EXIT_OK, "null\n", "")
    assert parse_call(srv.records[0]).proc == 0


def test_socket_from_environment(
    start_server: Callable[[Script], FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = start_server(results_server({}))
    monkeypatch.setenv("GSSPROXY_SOCKET", str(srv.path))
    assert cli("null")[0] == EXIT_OK
    assert len(srv.records) == 1


def test_arg_json_reaches_the_server(start_server: Callable[[Script], FakeServer]) -> None:
    out_name = g.GssxName(b"alice@EXAMPLE.TEST", KRB5 + b"\x01", b"\x04\x01", b"", (), ())
    res = g.GssxResImportAndCanonName(
        default_of(g.GssxStatus), out_name, (g.GssxOption(b"localname\0", b"alice"),)
    )
    srv = start_server(results_server({3: res}))
    arg_json = {
        "input_name": {"display_name": "alice", "name_type": {"oid": "1.2.840.113554.1.2.1.1"}},
        "mech": {"oid": "1.2.840.113554.1.2.2"},
        "options": [{"option": {"cstr": "localname"}, "value": ""}],
    }
    code, out, err = cli(
        "--socket", str(srv.path), "import_and_canon_name", "--arg-json", json.dumps(arg_json)
    )
    assert (code, err) == (EXIT_OK, "")
    arg = received_arg(srv)
    assert arg.input_name.display_name == b"alice"
    assert arg.input_name.name_type == bytes.fromhex("2a864886f71201020101")
    assert arg.mech == KRB5
    assert arg.options == (g.GssxOption(b"localname\0", b""),)
    shown = json.loads(out)
    assert shown["options"] == [{"option": "localname\0", "value": "alice"}]
    assert shown["output_name"]["exported_name"] == {"hex": "0401"}
    assert value_from_json(shown, g.GssxResImportAndCanonName) == res


def test_arg_file_and_stdin(start_server: Callable[[Script], FakeServer], tmp_path: Path) -> None:
    srv = start_server(results_server({}))
    arg = {"cred_usage": "GSSX_C_ACCEPT", "desired_mechs": [{"hex": KRB5.hex()}]}
    f = tmp_path / "arg.json"
    f.write_text(json.dumps(arg))
    assert cli("--socket", str(srv.path), "acquire_cred", "--arg-file", str(f))[0] == EXIT_OK
    assert (
        cli("--socket", str(srv.path), "acquire_cred", "--arg-file", "-", stdin=json.dumps(arg))[0]
        == EXIT_OK
    )
    first, second = received_arg(srv, 0), received_arg(srv, 1)
    assert first == second
    assert first.cred_usage is g.GssxCredUsage.GSSX_C_ACCEPT
    assert first.desired_mechs == (KRB5,)


def test_acquire_cred_result_prints_and_round_trips(
    start_server: Callable[[Script], FakeServer],
) -> None:
    name = g.GssxName(b"host/localhost@EXAMPLE.TEST", b"", b"", b"", (), ())
    elem = g.GssxCredElement(name, KRB5, g.GssxCredUsage.GSSX_C_ACCEPT, 0, 1 << 40, ())
    cred = g.GssxCred(name, (elem,), b"\x00\x01sealed\xff", False)
    res = g.GssxResAcquireCred(default_of(g.GssxStatus), cred, ())
    srv = start_server(results_server({6: res}))
    code, out, _ = cli("--socket", str(srv.path), "GSSX_ACQUIRE_CRED")
    assert code == EXIT_OK
    shown = json.loads(out)
    handle = shown["output_cred_handle"]
    assert handle["cred_handle_reference"] == {"hex": "00017365616c6564ff"}
    assert handle["elements"][0]["cred_usage"] == "GSSX_C_ACCEPT"
    assert handle["elements"][0]["MN"]["display_name"] == "host/localhost@EXAMPLE.TEST"
    assert value_from_json(shown, g.GssxResAcquireCred) == res


def test_printed_reply_can_be_sent_back(start_server: Callable[[Script], FakeServer]) -> None:
    # The output of one call is valid input for the next: a cred from
    # ACQUIRE_CRED goes into RELEASE_HANDLE as is.
    cred = g.GssxCred(default_of(g.GssxName), (), b"\x01\x02", False)
    srv = start_server(
        results_server({6: g.GssxResAcquireCred(default_of(g.GssxStatus), cred, ())})
    )
    _, out, _ = cli("--socket", str(srv.path), "acquire_cred")
    handle = json.loads(out)["output_cred_handle"]
    arg = json.dumps({"cred_handle": {"cred_info": handle}})
    assert cli("--socket", str(srv.path), "release_handle", "--arg-json", arg)[0] == EXIT_OK
    assert received_arg(srv).cred_handle == g.GssxHandleCredInfo(cred)


def test_nonzero_gss_status_is_reported_but_succeeds(
    start_server: Callable[[Script], FakeServer],
) -> None:
    status = g.GssxStatus(
        0xD0000, KRB5, 2529639053, b"Unspecified GSS failure\0", b"No credentials\0", b"", ()
    )
    srv = start_server(results_server({6: g.GssxResAcquireCred(status, None, ())}))
    code, out, err = cli("--socket", str(srv.path), "acquire_cred")
    assert code == EXIT_OK
    assert json.loads(out)["status"]["major_status"] == 0xD0000
    assert err == (
        "gssproxy-py-call: GSS major 0x000d0000 (GSS_S_FAILURE), minor 2529639053: "
        "Unspecified GSS failure; No credentials\n"
    )


def test_continue_needed_names_the_supplementary_bit(
    start_server: Callable[[Script], FakeServer],
) -> None:
    status = g.GssxStatus(1, KRB5, 0, b"", b"", b"", ())
    srv = start_server(results_server({8: g.GssxResInitSecContext(status, None, b"tok", ())}))
    code, out, err = cli("--socket", str(srv.path), "init_sec_context")
    assert code == EXIT_OK
    assert json.loads(out)["output_token"] == "tok"
    assert "GSS major 0x00000001 (GSS_S_CONTINUE_NEEDED), minor 0" in err


# -- failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stat", "tail", "word"),
    [
        (3, b"", "PROC_UNAVAIL"),
        (4, b"", "GARBAGE_ARGS"),
        (5, b"", "SYSTEM_ERR"),
        (1, b"", "PROG_UNAVAIL"),
        (2, struct.pack(">II", 1, 1), "PROG_MISMATCH"),
    ],
)
def test_rejection_exits_2(
    start_server: Callable[[Script], FakeServer], stat: int, tail: bytes, word: str
) -> None:
    srv = start_server(answering(lambda c: mark(accepted(c.xid, stat, tail))))
    code, out, err = cli("--socket", str(srv.path), "NULL")
    assert code == EXIT_REJECTED == 2
    assert out == ""
    assert word in err and err.count("\n") == 1
    assert err.startswith(f"gssproxy-py-call: {srv.path} refused NULL: ")


def test_auth_error_exits_2(start_server: Callable[[Script], FakeServer]) -> None:
    srv = start_server(answering(lambda c: mark(struct.pack(">IIIII", c.xid, 1, 1, 1, 7))))
    code, _, err = cli("--socket", str(srv.path), "indicate_mechs")
    assert code == EXIT_REJECTED
    assert "AUTH_ERROR" in err and "AUTH_FAILED" in err


def test_missing_socket_exits_1(tmp_path: Path) -> None:
    code, out, err = cli("--socket", str(tmp_path / "none.sock"), "NULL")
    assert code == EXIT_TRANSPORT == 1
    assert out == ""
    assert err == (
        f"gssproxy-py-call: NULL: cannot connect to {tmp_path / 'none.sock'}: "
        "no such socket (is the daemon running?)\n"
    )


def test_timeout_exits_1(start_server: Callable[[Script], FakeServer]) -> None:
    gate = threading.Event()

    def script(server: FakeServer, conn: socket.socket) -> None:
        server.read(conn)
        gate.wait(5)

    srv = start_server(script)
    code, _, err = cli("--socket", str(srv.path), "--timeout", "0.2", "indicate_mechs")
    gate.set()
    assert code == EXIT_TRANSPORT
    assert "no reply to GSSX_INDICATE_MECHS" in err and "0.2 s" in err


def test_closed_without_reply_exits_1(start_server: Callable[[Script], FakeServer]) -> None:
    srv = start_server(answering(lambda c: None))
    code, _, err = cli("--socket", str(srv.path), "NULL")
    assert code == EXIT_TRANSPORT
    assert "closed the connection" in err


def test_oversize_reply_exits_1(start_server: Callable[[Script], FakeServer]) -> None:
    srv = start_server(results_server({1: mechs_result()}))
    code, _, err = cli("--socket", str(srv.path), "--max-reply-size", "64", "indicate_mechs")
    assert code == EXIT_TRANSPORT
    assert "exceeds the limit of 64 bytes" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "no procedure named 'nope'"),
        (["16"], "no procedure 16"),
        ([], "PROCEDURE is required"),
        (["NULL", "--arg-json", "{}"], "NULL takes no argument"),
        (["indicate_mechs", "--arg-json", "{"], "not valid JSON"),
        (["indicate_mechs", "--arg-json", '{"x": 1}'], "no field 'x'"),
        (["indicate_mechs", "--arg-file", "/nonexistent/arg.json"], "cannot read"),
        (["indicate_mechs", "--arg-json", "{}", "--arg-file", "x"], "not allowed with"),
        (["acquire_cred", "--arg-json", '{"time_req": 18446744073709551616}'], "does not fit"),
        (["--timeout", "soon", "NULL"], "invalid float value"),
    ],
)
def test_usage_errors_exit_64(tmp_path: Path, argv: list[str], message: str) -> None:
    # A socket that does not exist: none of these may get as far as connecting.
    code, out, err = cli("--socket", str(tmp_path / "none.sock"), *argv)
    assert code == EXIT_USAGE == 64
    assert out == ""
    assert message in err


def test_list() -> None:
    code, out, _ = cli("--list")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert len(lines) == 16
    assert lines[0].split()[:2] == ["0", "NULL"]
    assert "GSSX_VERIFY" in lines[12] and "GssxArgVerifyMic -> GssxResVerifyMic" in lines[12]


def test_dry_run_prints_the_argument() -> None:
    code, out, _ = cli(
        "--socket",
        "/nonexistent",
        "--dry-run",
        "wrap",
        "--arg-json",
        '{"conf_req": true, "message_buffer": ["hi"]}',
    )
    assert code == EXIT_OK
    arg = value_from_json(json.loads(out), g.GssxArgWrap)
    assert arg.conf_req is True and arg.message_buffer == (b"hi",)
    assert json.loads(out) == value_to_json(arg)


def test_main_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--arg-json" in capsys.readouterr().out


def test_runs_as_a_module(start_server: Callable[[Script], FakeServer]) -> None:
    srv = start_server(results_server({1: mechs_result()}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gssproxy_py.client.call_cli",
            "--socket",
            str(srv.path),
            "indicate_mechs",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mechs"][0]["mech"]["oid"] == "1.2.840.113554.1.2.2"
