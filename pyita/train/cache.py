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
import warnings
from pathlib import Path
from collections.abc import Sequence

import torch

from pyita.descriptors import featurize
from pyita.model.potential import atomic_torch_save
from pyita.paths import user_cache_dir
from pyita.structure import Structure, geometry_key

#: Bump when the descriptor's numbers change for the same settings, or the shard format (invalidates old
#: caches). 2: shards carry a checksum of what they hold.
CACHE_VERSION = 2


def default_cache_dir() -> Path:
    """``$PYITA_CACHE/features``, else the features folder in ``pyita.paths.user_cache_dir()``."""
    return Path(os.environ.get("PYITA_CACHE") or user_cache_dir()) / "features"


def _settings_folder(root: Path, settings: dict) -> Path:
    text = json.dumps({"cache_version": CACHE_VERSION, **settings}, sort_keys=True)
    return root / hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class _DamagedShard(Exception):
    """A shard that fails its integrity check; the message says how."""


def _checksum(keys: list[str], n_atoms: torch.Tensor, features: torch.Tensor) -> str:
    """Hash of everything a shard holds, so that any change to its bytes shows."""
    h = hashlib.blake2b(digest_size=16)
    h.update("\n".join(keys).encode())
    h.update(n_atoms.to(torch.int64).numpy().tobytes())
    h.update(str(features.dtype).encode() + str(tuple(features.shape)).encode())
    h.update(features.contiguous().numpy().tobytes())
    return h.hexdigest()


def _read_shard(shard: Path, n_features: int) -> tuple[list[str], list[torch.Tensor]]:
    """The keys and per-structure features of a shard, after its integrity check: readable, the sizes consistent
    with each other and with the descriptor, the checksum its record states, every feature finite."""
    try:
        data = torch.load(shard, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise _DamagedShard(f"unreadable ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not {"keys", "features", "n_atoms", "checksum"} <= data.keys():
        raise _DamagedShard("not a feature shard of this PyITA version")
    keys, features, n_atoms = data["keys"], data["features"], data["n_atoms"]
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)
            and isinstance(features, torch.Tensor) and features.dim() == 2 and features.is_floating_point()
            and isinstance(n_atoms, torch.Tensor) and n_atoms.dim() == 1 and not n_atoms.is_floating_point()
            and len(n_atoms) == len(keys) and bool((n_atoms > 0).all())):
        raise _DamagedShard("its record is malformed")
    if int(n_atoms.sum()) != features.shape[0] or features.shape[1] != n_features:
        raise _DamagedShard(f"sizes do not match: {int(n_atoms.sum())} atoms and {n_features} features per atom "
                            f"expected, {tuple(features.shape)} found")
    if data["checksum"] != _checksum(keys, n_atoms, features):
        raise _DamagedShard("checksum mismatch")
    if not bool(torch.isfinite(features).all()):
        raise _DamagedShard("non-finite features")
    return keys, list(torch.split(features, n_atoms.tolist()))


def cached_features(descriptor, structures: Sequence[Structure], cache_dir: str | Path | None = None,
                    batch_size: int = 100, device=None, progress: bool = False) -> list[torch.Tensor]:
    """Features of each structure (atoms, F) on the CPU, from the cache where present.

    ``cache_dir=None`` uses ``default_cache_dir()`` (under $PYITA_CACHE, $XDG_CACHE_HOME/pyita or ~/.cache/pyita).
    A shard that fails its integrity check is never used: its structures are featurized again, the shard removed,
    and a warning says so.
    """
    folder = _settings_folder(Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                              descriptor.settings())
    keys = [geometry_key(s) for s in structures]
    wanted = {key: len(s) for key, s in zip(keys, structures)}
    found: dict[str, torch.Tensor] = {}
    damaged: list[Path] = []
    for shard in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        try:
            shard_keys, pieces = _read_shard(shard, descriptor.n_features)
            if any(key in wanted and len(piece) != wanted[key] for key, piece in zip(shard_keys, pieces)):
                raise _DamagedShard("sizes do not match: atom counts differ from the structures'")
        except _DamagedShard as exc:
            warnings.warn(f"feature cache shard {shard} failed its integrity check ({exc}): its structures are "
                          "featurized again and the shard is rebuilt", stacklevel=2)
            damaged.append(shard)
            continue
        found.update((key, piece) for key, piece in zip(shard_keys, pieces) if key in wanted and key not in found)
    missing = [k for k, key in enumerate(keys) if key not in found]
    if missing:
        unique = list({keys[k]: k for k in missing}.values())
        computed = featurize(descriptor, [structures[k] for k in unique], batch_size=batch_size,
                             progress=progress, device=device)
        found.update((keys[k], f) for k, f in zip(unique, computed))
        written = _write_shard(folder, [keys[k] for k in unique], computed)
        damaged = [shard for shard in damaged if shard != written]
    for shard in damaged:   # what it held is now in a new shard (or was found in another one)
        shard.unlink(missing_ok=True)
    return [found[key] for key in keys]


def _write_shard(folder: Path, keys: list[str], features: list[torch.Tensor]) -> Path:
    """Write one shard (atomically) with its integrity record; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.blake2b("".join(keys).encode(), digest_size=12).hexdigest()
    stacked = torch.cat([f.detach().cpu() for f in features])
    n_atoms = torch.tensor([len(f) for f in features], dtype=torch.long)
    payload = {"keys": keys, "features": stacked, "n_atoms": n_atoms,
               "checksum": _checksum(keys, n_atoms, stacked)}
    atomic_torch_save(payload, folder / f"{name}.pt")
    return folder / f"{name}.pt"
