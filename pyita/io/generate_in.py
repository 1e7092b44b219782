"""aenet's ``generate.in`` (the input of generate.x), read and written by aenet 2.0.4's rules.

Pitfalls handled here: ``FILES`` must be upper case with the count on the very next line (lower case makes
generate.x loop forever); single-token values are read Fortran list-directed, so a ``/`` ends them unless
the value is quoted; ``!``, ``#`` and ``%`` start comment lines.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ase.data import chemical_symbols

from pyita.errors import InputError
from pyita.io.files import not_regular, read_regular

_COMMENT = ("!", "#", "%")
_FLAGS = ("TIMING", "DEBUG", "FORCES")
_VALUED = ("VERBOSITY", "FORCESPERCENT")
_KEYWORDS = frozenset(("OUTPUT", "TYPES", "SETUPS", "FILES") + _FLAGS + _VALUED)
_SYMBOLS = frozenset(chemical_symbols[1:])


def quote_token(value: str) -> str:
    """Quote a single-token value so Fortran list-directed input keeps a ``/`` (it would end the value)."""
    if "/" in value or " " in value:
        if "'" in value:
            raise ValueError(f"cannot quote a path containing both '/' and a quote: {value!r}")
        return f"'{value}'"
    return value


def _token(value: str, keyword: str, path, lineno: int) -> str:
    """A single-token value as written; warn when aenet would cut it at an unquoted '/'."""
    plain = unquote_token(value)
    if plain == value and "/" in value:
        warnings.warn(f"{path}, line {lineno}: unquoted {keyword} value {value!r} contains '/'; aenet reads "
                      f"only {value.split('/')[0]!r} (PyITA writes such values quoted)", stacklevel=4)
    return plain


def unquote_token(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


@dataclass
class GenerateIn:
    """The settings of a generate.in; ``files`` are as written (relative to ``folder`` unless absolute)."""

    output: str = "data.train"
    types: dict[str, float] = field(default_factory=dict)
    setups: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    folder: Path = field(default_factory=Path)
    path: Path | None = None
    file_lines: list[int] = field(default_factory=list)

    def resolved_files(self) -> list[Path]:
        """The listed structure files as paths usable from the current directory."""
        return list(map(Path, self._resolved()))

    def _resolved(self) -> list[str]:
        folder = os.fspath(self.folder)
        return [f if os.path.isabs(f) else os.path.join(folder, f) for f in self.files]

    def check_files_exist(self) -> None:
        for k, (name, resolved) in enumerate(zip(self.files, self._resolved())):
            kind = not_regular(resolved)
            if kind is not None or not os.path.isfile(resolved):
                line = self.file_lines[k] if k < len(self.file_lines) else None
                problem = "does not exist" if kind is None else "is a folder, not a structure file" \
                    if kind == "a folder" else f"is {kind}, not a regular file"
                raise InputError(f"FILES entry {name!r} {problem} (looked for {resolved})", self.path, line)


def read_generate_in(path: str | Path, check_files: bool = True) -> GenerateIn:
    """Read generate.in; FILES entries are resolved relative to the file's own folder."""
    path = Path(path)
    try:
        # utf-8-sig: drops the byte-order mark some Windows editors put first (XSF files may have one too)
        raw = read_regular(path).decode("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path) from None
    lines = [(k + 1, line.strip()) for k, line in enumerate(raw)]
    lines = [(no, text) for no, text in lines if text and not text.startswith(_COMMENT)]
    gen = GenerateIn(folder=path.parent, path=path)
    seen_files = False
    i = 0
    while i < len(lines):
        lineno, text = lines[i]
        fields = text.split()
        keyword = fields[0].upper()
        if keyword not in _KEYWORDS:
            raise InputError(f"unknown keyword {fields[0]!r}", path, lineno)
        if keyword == "FILES":
            if fields[0] != "FILES":
                raise InputError("FILES must be upper case (aenet's generate.x loops forever otherwise)",
                                 path, lineno)
            i = _read_files(raw, lineno, gen, path)
            seen_files = True
            lines = [(no, t) for no, t in lines if no > i]
            i = 0
            continue
        if keyword == "OUTPUT":
            if len(fields) < 2:
                raise InputError("OUTPUT needs a file name", path, lineno)
            gen.output = _token(fields[1], "OUTPUT", path, lineno)
        elif keyword == "TYPES":
            i = _read_types(lines, i, gen, path)
            continue
        elif keyword == "SETUPS":
            i += 1
            while i < len(lines) and lines[i][1].split()[0] in _SYMBOLS:
                no, entry = lines[i]
                parts = entry.split()
                if len(parts) < 2:
                    raise InputError("SETUPS line needs 'Sym file.stp'", path, no)
                gen.setups[parts[0]] = _token(parts[1], "SETUPS", path, no)
                i += 1
            continue
        else:
            gen.options.append(text)
        i += 1
    if not seen_files:
        raise InputError("no FILES section", path)
    if not gen.types:
        raise InputError("no TYPES section", path)
    missing = set(gen.setups) - set(gen.types)
    if missing:
        raise InputError(f"SETUPS names species not in TYPES: {sorted(missing)}", path)
    if check_files:
        gen.check_files_exist()
    return gen


def _read_types(lines, i, gen: GenerateIn, path) -> int:
    lineno = lines[i][0]
    if i + 1 >= len(lines):
        raise InputError("TYPES needs a count on the next line", path, lineno)
    count_no, count_text = lines[i + 1]
    try:
        count = int(count_text.split()[0])
    except ValueError:
        raise InputError(f"TYPES count {count_text!r} is not an integer", path, count_no) from None
    for no, entry in lines[i + 2 : i + 2 + count]:
        parts = entry.split()
        if parts[0] not in _SYMBOLS:
            raise InputError(f"TYPES entry {parts[0]!r} is not an element symbol", path, no)
        try:
            gen.types[parts[0]] = float(parts[1].replace("d", "e").replace("D", "e"))
        except (IndexError, ValueError):
            raise InputError("TYPES line needs 'Sym E_atom'", path, no) from None
        if not math.isfinite(gen.types[parts[0]]):
            raise InputError(f"TYPES energy of {parts[0]} is {parts[1]!r}, not a finite number (eV)", path, no)
    if len(gen.types) != count:
        raise InputError(f"TYPES announces {count} species but lists {len(gen.types)}", path, count_no)
    return i + 2 + count


def _read_files(raw: list[str], lineno: int, gen: GenerateIn, path) -> int:
    """Read the FILES block from the raw lines; returns the last line number it used."""
    if lineno >= len(raw):
        raise InputError("FILES needs the number of files on the very next line", path, lineno)
    count_text = raw[lineno].strip()
    try:
        count = int(count_text.split()[0])
    except (ValueError, IndexError):
        raise InputError(f"FILES must be followed directly by the number of files, got {count_text!r}",
                         path, lineno + 1) from None
    if count < 1:
        raise InputError("FILES lists no structures" if count == 0 else f"FILES count {count} is negative",
                         path, lineno + 1)
    k = lineno + 1
    while k < len(raw) and len(gen.files) < count:
        entry = raw[k].strip()
        k += 1
        if not entry or entry.startswith(_COMMENT):
            continue
        if entry.split()[0].upper() in _KEYWORDS:
            break
        gen.files.append(entry)
        gen.file_lines.append(k)
    if len(gen.files) != count:
        raise InputError(f"FILES announces {count} files but lists {len(gen.files)}", path, lineno + 1)
    _drop_repeated_files(gen, path)
    for j in range(k, len(raw)):
        entry = raw[j].strip()
        if entry and not entry.startswith(_COMMENT):
            if entry.split()[0].upper() in _KEYWORDS:
                break
            raise InputError(f"FILES announces {count} files but more are listed", path, j + 1)
    return k


def _drop_repeated_files(gen: GenerateIn, path) -> None:
    """Keep the first of FILES entries naming the same file (also through another spelling or a link), with a
    warning: a structure listed twice counts twice and can end up in both a training and a test set."""
    first: dict[str, int] = {}
    keep, repeats = [], []
    for k, resolved in enumerate(gen._resolved()):
        line = first.setdefault(os.path.realpath(resolved), gen.file_lines[k])
        if line == gen.file_lines[k]:
            keep.append(k)
        else:
            repeats.append(f"{gen.files[k]!r} on line {gen.file_lines[k]} (as line {line})")
    if repeats:
        warnings.warn(f"{path}: FILES lists {len(repeats)} file(s) again, read once: "
                      f"{', '.join(repeats[:3])}{', …' if len(repeats) > 3 else ''}", stacklevel=4)
    gen.files = [gen.files[k] for k in keep]
    gen.file_lines = [gen.file_lines[k] for k in keep]


def format_generate_in(gen: GenerateIn) -> str:
    """generate.in text in the layout aenet documents (paths in FILES are written as given)."""
    out = [f"OUTPUT  {quote_token(gen.output)}", "", "TYPES", str(len(gen.types))]
    out += [f"{sym:<3} {energy:.8f}   | eV" for sym, energy in gen.types.items()]
    if gen.setups:
        out += ["", "SETUPS"] + [f"{sym:<3} {quote_token(stp)}" for sym, stp in gen.setups.items()]
    if gen.options:
        out += [""] + gen.options
    out += ["", "FILES", str(len(gen.files))] + [str(f) for f in gen.files]
    return "\n".join(out) + "\n"


def write_generate_in(path: str | Path, gen: GenerateIn) -> None:
    Path(path).write_text(format_generate_in(gen))
