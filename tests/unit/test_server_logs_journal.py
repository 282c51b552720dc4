"""Logging to the journal: `<N>` priorities and no timestamps when stderr is
the stream `JOURNAL_STREAM` names; the usual format on any other stream."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from gssproxy_py.server import logs


def journal_env(path: Path) -> dict[str, str]:
    st = os.stat(path)
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_only_the_named_stream_is_the_journal(tmp_path: Path) -> None:
    journal, other = tmp_path / "journal", tmp_path / "other"
    journal.touch()
    other.touch()
    with open(journal, "w") as j, open(other, "w") as o:
        assert logs.stream_is_journal(j, journal_env(journal))
        assert not logs.stream_is_journal(o, journal_env(journal))
        assert not logs.stream_is_journal(j, {})
        assert not logs.stream_is_journal(j, {"JOURNAL_STREAM": "garbage"})
    assert not logs.stream_is_journal(io.StringIO(), journal_env(journal))  # no fileno


def _record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError as e:
            exc_info = (type(e), e, e.__traceback__)
    return logging.LogRecord("gssproxy_py.x", level, __file__, 1, msg, None, exc_info)


def test_journal_lines_carry_the_syslog_priority_and_no_timestamp() -> None:
    fmt = logs._JournalFormatter()
    assert fmt.format(_record(logging.WARNING, "keytab missing")) == "<4>WARNING: keytab missing"
    assert fmt.format(_record(logging.ERROR, "x")).startswith("<3>ERROR: ")
    assert fmt.format(_record(logging.CRITICAL, "x")).startswith("<2>")
    assert fmt.format(_record(logging.INFO, "x")).startswith("<6>")
    assert fmt.format(_record(logging.DEBUG, "x")).startswith("<7>")
    assert fmt.format(_record(logs.SECRETS_LOG_LEVEL, "x")).startswith("<7>")


def test_every_line_of_a_traceback_keeps_the_priority() -> None:
    text = logs._JournalFormatter().format(_record(logging.ERROR, "failed", exc=True))
    lines = text.splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_configure_logging_picks_the_journal_format(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.touch()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = [h for h in handlers if not isinstance(h, logs._DaemonHandler)]
    env = journal_env(journal)
    os.environ.update(env)
    try:
        with open(journal, "w") as stream:
            logs.configure_logging(0, stream)
            logging.getLogger("gssproxy_py.test").warning("to the journal")
            stream.flush()
        assert journal.read_text() == "<4>WARNING: to the journal\n"
    finally:
        del os.environ["JOURNAL_STREAM"]
        root.handlers[:] = handlers
        root.setLevel(level)
