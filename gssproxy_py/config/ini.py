"""A small INI reader for gssproxy.conf and its conf.d fragments.

It reproduces the subset of ding-libs `libini_config` that gssproxy relies on:

* sections `[gssproxy]` and `[service/NAME]` only; any other section is an error
  (gssproxy restricts conf.d files to these two patterns; we apply it to every
  file, since nothing reads any other section);
* whole-line comments starting with `#` or `;` only, so a `#` inside a value is
  part of the value (`INI_PARSE_NOWRAP`, no inline comments);
* `key = value`, split at the first `=`, with key and value stripped; keys may
  contain spaces (`worker threads`);
* no line continuation: a line that is not blank, a comment, a section header or
  `key = value` is an error.

Merging follows gssproxy's libini flags. Within one file
(`INI_MS_MERGE|INI_MV1S_ALLOW|INI_MV2S_ALLOW`) a repeated section merges into
its first appearance and repeated keys accumulate, which is how multi-valued
`cred_store` works; whether a repeat is legal for a given option is decided by
the option layer (`options.py`), not here. Across files
(`INI_MS_DETECT|INI_MS_PRESERVE`) the first file to define a section wins and a
later definition is dropped whole, with a warning.

Every entry remembers its file and line so that errors can point at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gssproxy_py.errors import ConfigError

GLOBAL_SECTION = "gssproxy"
SERVICE_PREFIX = "service/"


@dataclass(frozen=True, slots=True)
class IniEntry:
    """One `key = value` line."""

    key: str
    value: str
    file: str
    line: int

    @property
    def where(self) -> str:
        """`FILE:LINE`, for messages that cite more than one place."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class IniSection:
    """A section after merging its repeats within one file.

    `file` and `line` are those of its first header; `entries` keep file order,
    including repeated keys.
    """

    name: str
    file: str
    line: int
    entries: tuple[IniEntry, ...]

    @property
    def is_global(self) -> bool:
        return self.name == GLOBAL_SECTION

    @property
    def service_name(self) -> str | None:
        """NAME for `[service/NAME]`, None for `[gssproxy]`."""
        if self.name.startswith(SERVICE_PREFIX):
            return self.name[len(SERVICE_PREFIX) :]
        return None

    def get(self, key: str) -> tuple[IniEntry, ...]:
        """All entries for `key`, in file order (empty if absent)."""
        return tuple(e for e in self.entries if e.key == key)

    def option_names(self) -> tuple[str, ...]:
        """Distinct keys in order of first appearance."""
        return tuple(dict.fromkeys(e.key for e in self.entries))


def _check_section_name(name: str, file: str, line: int) -> str:
    if name == GLOBAL_SECTION:
        return name
    if name.startswith(SERVICE_PREFIX):
        service = name[len(SERVICE_PREFIX) :].strip()
        if not service:
            raise ConfigError("section [service/] has an empty service name", file=file, line=line)
        return SERVICE_PREFIX + service
    raise ConfigError(
        f"unknown section [{name}]; only [gssproxy] and [service/NAME] are allowed",
        file=file,
        line=line,
    )


def parse_ini(text: str, file: str) -> tuple[IniSection, ...]:
    """Parse one file's text; repeated sections are merged into the first.

    Raises ConfigError (with file and line) on any malformed line.
    """
    # Insertion order of this dict is the order of first appearance.
    headers: dict[str, tuple[int, list[IniEntry]]] = {}
    current: list[IniEntry] | None = None

    if text.startswith("\ufeff"):
        text = text[1:]
    # Split on "\n" only: str.splitlines() would also break on form feeds and
    # Unicode separators, which libini treats as ordinary characters.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip()
        if "\0" in line:
            raise ConfigError("NUL byte in configuration line", file=file, line=lineno)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if line[-1] != "]":
                raise ConfigError("malformed section header (missing ']')", file=file, line=lineno)
            name = _check_section_name(line[1:-1].strip(), file, lineno)
            if name not in headers:
                headers[name] = (lineno, [])
            current = headers[name][1]
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(
                "expected 'key = value', a [section] header or a comment",
                file=file,
                line=lineno,
            )
        if not key:
            raise ConfigError("missing option name before '='", file=file, line=lineno)
        if current is None:
            raise ConfigError("option outside any section", file=file, line=lineno, option=key)
        current.append(IniEntry(key, value.strip(), file, lineno))

    return tuple(
        IniSection(name, file, first_line, tuple(entries))
        for name, (first_line, entries) in headers.items()
    )


def merge_files(
    files: Iterable[Sequence[IniSection]],
) -> tuple[tuple[IniSection, ...], tuple[str, ...]]:
    """Combine per-file sections in file order: the first definition wins.

    Returns the surviving sections (in order of first appearance across files)
    and one warning per dropped section, naming both places.
    """
    kept: dict[str, IniSection] = {}
    warnings: list[str] = []
    for sections in files:
        for section in sections:
            first = kept.get(section.name)
            if first is None:
                kept[section.name] = section
                continue
            warnings.append(
                f"{section.file}:{section.line}: section [{section.name}] is already "
                f"defined at {first.file}:{first.line}; ignoring this definition "
                "(the first file wins)"
            )
    return tuple(kept.values()), tuple(warnings)
