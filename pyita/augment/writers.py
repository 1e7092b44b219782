"""What `pyita augment` writes: derived structures as aenet XSF files beside an augmented generate.in, or as
one extended-XYZ file, and a manifest row per derived structure."""

from __future__ import annotations

import csv
import io
import os
import shutil
import warnings
from pathlib import Path
from collections.abc import Sequence

from pyita.augment.settings import DEFAULT_CONFIG_TYPE, AugmentSettings
from pyita.augment.derive import describe, iter_moves
from pyita.augment.taylor import displaced
from pyita.architecture import ChebyshevSetup
from pyita.errors import InputError
from pyita.io import DataSource
from pyita.io.aenet_inputs import write_stp_files
from pyita.io.generate_in import GenerateIn, format_generate_in
from pyita.io.xsf import ORIGINAL_MARK, aenet_text, read_xsf
from pyita.io.xsf_write import XsfTemplate, format_xsf
from pyita.reference import Composition, References, resolve_references


#: The training-set file (OUTPUT) of a generate.in written for input that had none.
AUGMENTED_TRAINSET = "augmented.train"
MANIFEST_FIELDS = ["file", "parent_index", "parent", "copy", "atom", "direction", "dx", "dy", "dz",
                   "taylor_shift_eV", "energy_eV", "strategy", "delta", "seed"]


def _manifest_row(file: str, parent_name: str, energy: float, info: dict) -> list:
    """One manifest row, in the order of MANIFEST_FIELDS."""
    vector = info.get("displacement", ("", "", ""))
    return [file, info["parent"], parent_name, info["copy"], info["atom"] + 1 if info["atom"] >= 0 else "all",
            info["direction"], vector[0], vector[1], vector[2], f"{info['taylor_shift']:.10f}",
            f"{energy:.10f}", info["strategy"], info["delta"], info["seed"]]


def _write_file(path: str, text: str) -> None:
    """Create one small file with three system calls (no buffered text-file object)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_derived_xsf(parent, index: int, moves, settings: AugmentSettings, parent_name: str, stem: str,
                       derived_dir: str, template: XsfTemplate | None = None) -> tuple[list[str], str]:
    """Write one parent's derived XSF files; returns their paths relative to the output folder and the
    manifest rows as CSV text.

    The hot path of the job. The template holds the parent's cell and atom lines, formatted once (or the
    parent file's own lines, see ``XsfTemplate.verbatim``); a single-atom move re-formats only the moved
    atom's line.
    """
    if template is None:
        template = XsfTemplate(parent, forces=parent.forces)
    positions = parent.positions.tolist()
    forces = parent.forces.tolist()
    kind = parent.energy_kind
    plain = not any(c in parent_name + stem for c in ',"\r\n')  # nothing a CSV writer would quote
    buffer = io.StringIO()
    manifest = csv.writer(buffer)
    rows = []
    files = []
    for copy, move in enumerate(moves):
        energy, info, comments = describe(parent, index, move, settings, copy, forces)
        name = f"derived/{stem}-t{copy + 1:03d}.xsf"
        if move.atom is None:
            text = template.text(energy, comments, kind, positions=parent.positions + move.field)
            manifest.writerow(_manifest_row(name, parent_name, energy, info))
        else:
            atom = move.atom
            x, y, z = positions[atom]
            vx, vy, vz = move.vector
            text = template.text_one(energy, comments, kind, atom, (x + vx, y + vy, z + vz))
            if plain:  # the row csv.writer would write, without its per-field overhead
                rows.append(f"{name},{index},{parent_name},{copy},{atom + 1},{move.direction},{vx!r},{vy!r},"
                            f"{vz!r},{info['taylor_shift']:.10f},{energy:.10f},{settings.strategy},"
                            f"{settings.delta!r},{settings.seed}\r\n")
            else:
                manifest.writerow(_manifest_row(name, parent_name, energy, info))
        _write_file(f"{derived_dir}/{name[8:]}", text)
        files.append(name)
    return files, "".join(rows) + buffer.getvalue()


class XsfWriter:
    """Derived structures as aenet XSF files under derived/, plus an augmented generate.in that generate.x runs as
    written: the input generate.in's TYPES and copies of its SETUPS files, or, for any other input, a ``<Sym>.stp``
    per species from ``setup`` and TYPES from ``resolve_references`` (``types`` given, else fitted on the parents).

    The FILES list is streamed to a scratch file, so memory does not grow with the number of parents.
    """

    def __init__(self, tmp: Path, final_abs: Path, parents_on_disk: bool, template: GenerateIn | None,
                 setup=None, types: dict[str, float] | None = None):
        self.tmp, self.final_abs = tmp, str(final_abs)
        self.template = template
        self.setup = ChebyshevSetup() if setup is None else setup
        self.types = dict(types or {})
        self.missing_setups: list[str] = []
        self.setups = self._copy_setups(template)   # first: a missing setup file stops the run before work
        (tmp / "derived").mkdir()
        self.derived_dir = str(tmp / "derived")
        self._list = open(tmp / ".files.tmp", "w+")
        self.count = 0
        self.parents_on_disk = parents_on_disk
        self._folders: dict[str, str] = {}

    def parent(self, parent, name: str, stem: str) -> None:
        """List a parent: its own file when it is an XSF on disk that aenet reads as it is, else a copy
        written under parents/ (aenet stops on a tab between fields, see ``aenet_text``).

        Paths are relative to the output folder (symbolic links in the parent's folder resolved), so the
        output generate.in works from its own folder, as aenet reads it.
        """
        if self.parents_on_disk and aenet_text(name) is None:
            folder, base = os.path.split(name)
            rel = self._folders.get(folder)
            if rel is None:
                rel = self._folders[folder] = os.path.relpath(os.path.realpath(folder or "."), self.final_abs)
            entry = f"{rel}/{base}" if rel != "." else base
        else:
            parent = read_xsf(name) if parent is None else parent
            (self.tmp / "parents").mkdir(exist_ok=True)
            entry = f"parents/{stem}.xsf"
            # the derived files name this parent by its original source (e.g. "sample[3]"): record it
            copy = parent.copy(comments=[f"{ORIGINAL_MARK} {name}"] + parent.comments)
            _write_file(str(self.tmp / entry), format_xsf(copy))
        self._list.write(entry + "\n")
        self.count += 1

    def add_derived(self, files: list[str]) -> None:
        if files:
            self._list.write("\n".join(files) + "\n")
            self.count += len(files)

    def _copy_setups(self, template: GenerateIn | None) -> dict[str, str]:
        """Copy each SETUPS file beside the output generate.in and name it by its plain file name.

        A copy, not a rebased path: aenet reads a SETUPS name list-directed, so a ``/`` would end it, and the
        output folder then runs as it stands (``cd OUT && generate.x generate.in``) wherever it is moved.
        """
        setups, taken = {}, {}
        for species, name in (template.setups if template is not None else {}).items():
            source = Path(name) if os.path.isabs(name) else Path(template.folder) / name
            if not source.is_file():   # generate.x needs it, the augmentation does not: warned at the end
                self.missing_setups.append(f"{template.path}: SETUPS file {name!r} for {species} does not "
                                           f"exist (looked for {source}); the output generate.in names it as "
                                           "written, so put it beside the output before running generate.x")
                setups[species] = name
                continue
            copy = source.name if taken.get(source.name, source) == source else f"{species}.stp"
            taken[copy] = source
            shutil.copyfile(source, self.tmp / copy)
            setups[species] = copy
        return setups

    def close(self, species: list[str], labels: Sequence[Composition]) -> dict:
        """Write generate.in (and, for input other than a generate.in, the .stp files); ``labels`` are the
        originals the TYPES energies may be fitted to. Returns what was chosen, for run.json."""
        template = self.template
        unknown = sorted(set(self.types) - set(species))
        if unknown:
            warnings.warn(f"--types gives energies for species not in the data: {', '.join(unknown)}", stacklevel=3)
        if template is not None:
            missing = [s for s in species if s not in template.types]
            if missing:  # generate.x would stop on these structures
                raise InputError(f"species {', '.join(missing)} occur in the structures but not in TYPES",
                                 template.path)
            for message in self.missing_setups:
                warnings.warn(message, stacklevel=3)
            refs = resolve_references(labels, list(template.types), self.types, template.types, warn=False)
            gen = GenerateIn(output=template.output, types=refs.energies, setups=self.setups,
                             options=list(template.options) + _types_comments(refs))
            chosen = {"setups": "copied from the input generate.in"}
        else:
            refs = resolve_references(labels, species, self.types, warn=False)
            gen = GenerateIn(output=AUGMENTED_TRAINSET, types=refs.energies,
                             setups=write_stp_files(self.tmp, species, self.setup), options=_types_comments(refs))
            chosen = {"setups": self.setup.as_dict()}
        head = format_generate_in(gen)
        assert head.endswith("FILES\n0\n")
        self._list.seek(0)
        with open(self.tmp / "generate.in", "w") as handle:
            handle.write(head[:-2] + f"{self.count}\n")
            while block := self._list.read(1 << 20):
                handle.write(block)
        self._list.close()
        os.remove(self.tmp / ".files.tmp")
        return {**chosen, "reference_energies": refs.energies, "reference_energies_origin": refs.origin,
                "reference_energy_fit": refs.fit}


def _types_comments(refs: References) -> list[str]:
    """generate.in comment lines saying where TYPES energies not taken from the input came from."""
    lines = []
    given = [s for s, origin in refs.origin.items() if origin == "user"]
    if given:
        lines.append(f"! TYPES energies of {', '.join(given)} given by --types")
    if refs.fit.get("note"):
        lines.append(f"! {refs.fit['note']} (PyITA; see run.json)")
    return lines


class ExtxyzWriter:
    """All structures in one extended-XYZ file; derived frames carry an energy, no forces, ``derived=T``, their
    parent and ``config_type`` (so per-type loss weights can tell them apart)."""

    def __init__(self, tmp: Path, only_derived: bool, config_type: str = DEFAULT_CONFIG_TYPE):
        self.handle = open(tmp / "augmented.extxyz", "w")
        self.only_derived = only_derived
        self.config_type = config_type

    def _write(self, structure, extra: dict) -> None:
        import ase.io

        atoms = structure.to_ase()
        atoms.info = {k: v for k, v in {**atoms.info, **extra}.items() if v is not None}
        ase.io.write(self.handle, atoms, format="extxyz")

    def results(self, source: DataSource, names, stems, excluded, settings: AugmentSettings):
        """Write parent and derived frames, parent by parent; yields the same records as ``xsf_results``."""
        for index, parent, moves in iter_moves(source, settings, len(names) - len(excluded), excluded):
            if not self.only_derived:
                self._write(parent, {"source": names[index], "derived": False})
            buffer = io.StringIO()
            manifest = csv.writer(buffer)
            forces = parent.forces.tolist() if moves else None
            for copy, move in enumerate(moves):
                energy, info, comments = describe(parent, index, move, settings, copy, forces)
                name = f"{stems[index]}-t{copy + 1:03d}"
                self._write(displaced(parent, move, info, comments, energy),
                            {"name": name, "derived": True, "config_type": self.config_type})
                manifest.writerow(_manifest_row(f"augmented.extxyz#{name}", names[index], energy, info))
            yield index, parent, Composition.of(parent), len(moves), [], buffer.getvalue()

    def close(self, species, labels) -> dict:
        self.handle.close()
        return {}
