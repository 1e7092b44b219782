"""A disk that fills up while a model or checkpoint is saved: one line naming the file, exit status 2, and no
partial file (issue 22). A real 64 KiB tmpfs where the tests may mount one (root), else skipped; the same
rule in-process by an ENOSPC write everywhere."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyita.errors import PyitaError
from pyita.model.potential import atomic_torch_save

from faults import error_line, make_case, run_cli


@pytest.fixture()
def tiny_disk(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_full_disk_while_saving_names_the_file_and_leaves_nothing(tmp_path, tiny_disk):
    generate_in = make_case(tmp_path / "case")
    # 30-30 networks: the model (~45 kB) or its larger checkpoint does not fit in 64 KiB
    result = run_cli("train", generate_in, "--out", tiny_disk / "m.pt", "--iterations", 2, "--hidden",
                     "30:tanh,30:tanh", "-q", "--no-cache", cwd=tmp_path)
    line = error_line(result, f"cannot write {tiny_disk / 'm.pt'}", "No space left on device")
    assert "RuntimeError" not in result.stderr, line
    left = os.listdir(tiny_disk)   # no partial file; at most the run's complete checkpoint, for --resume
    assert left in ([], ["m.pt.ckpt"]), left
    if left:
        from pyita.train.run import is_checkpoint_file

        assert is_checkpoint_file(tiny_disk / "m.pt.ckpt")


def test_enospc_in_any_atomic_save_names_the_file(tmp_path, monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(PyitaError, match=f"cannot write {tmp_path / 'model.pt.ckpt'}: No space left on device"):
        atomic_torch_save({"weights": [1.0] * 100}, tmp_path / "model.pt.ckpt")
    assert os.listdir(tmp_path) == []
