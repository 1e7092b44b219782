"""On-disk cache of descriptor features: featurize a structure once, reuse it in every later run.

Features depend only on the geometry (symbols, positions, cell) and the descriptor settings, so each
structure is keyed by a hash of exactly those. A folder per descriptor setting holds "shards": each
featurization that found structures missing writes one shard with just those, through a temporary file
and a rename, so concurrent runs (e.g. an experiment's process pool) never see a partial shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pyita.descriptors import featurize
from pyita.model.potential import atomic_torch_save
from pyita.structure import Structure

#: Bump when the descriptor's numbers change for the same settings (invalidates old caches).
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("PYITA_CACHE", Path.home() / ".cache" / "pyita")) / "features"


def structure_key(structure: Structure) -> str:
    """Hash of what features depend on: symbols, positions and cell (not energies or forces)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(" ".join(structure.symbols).encode())
    h.update(np.ascontiguousarray(structure.positions, dtype=np.float64).tobytes())
    h.update(b"none" if structure.cell is None else np.ascontiguousarray(structure.cell, dtype=np.float64).tobytes())
    return h.hexdigest()


def _settings_folder(root: Path, settings: dict) -> Path:
    text = json.dumps({"cache_version": CACHE_VERSION, **settings}, sort_keys=True)
    return root / hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def cached_features(descriptor, structures: Sequence[Structure], cache_dir: str | Path | None = None,
                    batch_size: int = 100, device=None, progress: bool = False) -> list[torch.Tensor]:
    """Features of each structure (atoms, F) on the CPU, from the cache where present.

    ``cache_dir=None`` uses ``$PYITA_CACHE`` or ``~/.cache/pyita``.
    """
    folder = _settings_folder(Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                              descriptor.settings())
    keys = [structure_key(s) for s in structures]
    wanted = set(keys)
    found: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        try:
            data = torch.load(shard, map_location="cpu", weights_only=True)
        except Exception:  # a foreign or damaged file is skipped, never trusted
            continue
        hits = [k for k, key in enumerate(data["keys"]) if key in wanted and key not in found]
        if hits:
            pieces = torch.split(data["features"], data["n_atoms"].tolist())
            found.update((data["keys"][k], pieces[k]) for k in hits)
    missing = [k for k, key in enumerate(keys) if key not in found]
    if missing:
        unique = list({keys[k]: k for k in missing}.values())
        computed = featurize(descriptor, [structures[k] for k in unique], batch_size=batch_size,
                             progress=progress, device=device)
        found.update((keys[k], f) for k, f in zip(unique, computed))
        _write_shard(folder, [keys[k] for k in unique], computed)
    return [found[key] for key in keys]


def _write_shard(folder: Path, keys: list[str], features: list[torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.blake2b("".join(keys).encode(), digest_size=12).hexdigest()
    payload = {"keys": keys, "features": torch.cat(features),
               "n_atoms": torch.tensor([len(f) for f in features], dtype=torch.long)}
    atomic_torch_save(payload, folder / f"{name}.pt")
