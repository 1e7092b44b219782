"""aenet XSF for ASE users: ``ase.io.read(path, format="aenet-xsf")`` and ``ase.io.write(..., format="aenet-xsf")``.

Registered through the ``ase.ioformats`` entry point (see pyproject.toml). ASE's own ``xsf`` format drops
aenet's energy comment and reads the force columns as Hartree-based units (27.2× too large); this format
uses PyITA's reader and writer, so energies are in eV and forces in eV/Å, exactly as in the file.

This module is imported by ASE while ``ase.io.formats`` itself is still being imported, so it imports
nothing from ASE's io package (or from PyITA) at module level.
"""

from __future__ import annotations

from ase.utils.plugins import ExternalIOFormat

#: The entry point object. Code "1F": one structure per file, works on open file objects.
aenet_xsf_format = ExternalIOFormat(
    desc="aenet XSF (energy line in eV, force columns in eV/Å)",
    code="1F",
    module="pyita.io.ase_plugin",
)


def read_aenet_xsf(fileobj, **kwargs):
    """One aenet XSF as ``ase.Atoms`` with a SinglePointCalculator (energy eV, forces eV/Å).

    Provenance comment lines are kept in ``atoms.info["comments"]``; a PyITA-derived file has no force
    labels (its force columns are placeholders, kept in ``atoms.info["placeholder_forces"]``).
    """
    from pyita.io.xsf import parse_xsf

    name = getattr(fileobj, "name", "<stream>")
    structure = parse_xsf(fileobj.read().splitlines(), name)
    atoms = structure.to_ase()
    if structure.comments:
        atoms.info["comments"] = list(structure.comments)
    return atoms


def write_aenet_xsf(fileobj, atoms, **kwargs):
    """Write ``atoms`` (energy and forces from its calculator, or ``info``/``arrays``) as an aenet XSF."""
    from pyita.io.xsf_write import format_xsf
    from pyita.structure import Structure

    if isinstance(atoms, (list, tuple)):
        if len(atoms) != 1:
            raise ValueError("aenet XSF holds exactly one structure per file")
        atoms = atoms[0]
    structure = Structure.from_ase(atoms)
    comments = structure.info.pop("comments", None)
    if comments:
        structure.comments = [str(c) for c in ([comments] if isinstance(comments, str) else comments)]
    fileobj.write(format_xsf(structure))
