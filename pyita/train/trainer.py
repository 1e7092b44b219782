"""The training loop: full-batch L-BFGS (aenet's ``bfgs``) or mini-batch Adam over precomputed features.

One epoch is one L-BFGS iteration (with a strong-Wolfe line search) or one pass of Adam over the
training set. Every random choice derives from the seed and the epoch number, so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable

import torch

from pyita import __version__
from pyita.errors import Interrupted, PyitaError
from pyita.model.potential import atomic_torch_save
from pyita.progress import progress_bar, sig
from pyita.train.data import FeatureSet, Outputs, evaluate
from pyita.descriptors.jacobian import StreamedJacobians
from pyita.metrics import per_atom_energy_errors, summarize
from pyita.train.settings import TrainSettings

CHECKPOINT_KIND = "pyita-checkpoint"
CHECKPOINT_FORMAT = 1
#: Settings that may differ between a run and its resumption (everything else must match); a smaller learning
#: rate is how a run that diverged continues from its last finite checkpoint, and a resumed job may run under
#: another memory limit (stored or streamed Jacobians train alike).
RESUMABLE_CHANGES = ("iterations", "patience", "checkpoint_every", "device", "learning_rate", "max_memory")


class TrainingDiverged(PyitaError):
    """The loss or the weights became NaN or infinite: no model is written from them."""


class StopFlag:
    """Set by SIGINT/SIGTERM (see :func:`graceful_stop`); the loop stops after the current epoch and raises
    ``Interrupted`` for that signal (exit status 128 + its number, as for any interrupted command)."""

    def __init__(self):
        self.requested = False
        self.signum = signal.SIGINT


@contextmanager
def graceful_stop():
    """Turn the first Ctrl-C or SIGTERM into a clean stop with a checkpoint; a second one aborts."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise Interrupted(signum)
        flag.requested, flag.signum = True, signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _measures(outputs, data: FeatureSet, prefix: str) -> dict:
    """Energy MAE/RMSE (meV/atom) over the original structures of ``data``; force RMSE where computed."""
    originals = ~data.derived
    stats = summarize(per_atom_energy_errors(outputs.energies[originals], data.energy[originals],
                                             data.n_atoms[originals]))
    row = {f"{prefix}_mae": stats["mae"], f"{prefix}_rmse": stats["rmse"]}
    if outputs.forces is not None:
        errors = (outputs.forces - data.forces[data.jacobians.atoms]).detach()
        row[f"{prefix}_force_rmse"] = float(torch.sqrt(torch.mean(errors * errors)))
    return row


class _BatchOutputs:
    """An epoch's mini-batch outputs (each batch under the weights of its own step), put together in the numbering
    of the whole training set. With streamed Jacobians the training-set columns of the history come from these:
    evaluating the whole set again at the epoch's end would compute every Jacobian a second time."""

    def __init__(self, data: FeatureSet):
        self.data = data
        atoms = data.jacobians.atoms
        self.place = torch.full((len(data.inputs),), -1, dtype=torch.long, device=atoms.device)
        self.place[atoms] = torch.arange(len(atoms), device=atoms.device)
        self.energies = data.energy.new_full((len(data),), float("nan"))
        self.forces = data.forces.new_full((len(atoms), 3), float("nan"))

    def add(self, indices: torch.Tensor, batch: FeatureSet, outputs: Outputs) -> None:
        self.energies[indices] = outputs.energies.detach()
        if outputs.forces is not None:
            rows = self.data.atom_rows(indices)[batch.jacobians.atoms]
            self.forces[self.place[rows]] = outputs.forces.detach()

    def outputs(self) -> Outputs:
        return Outputs(self.energies, self.forces)


class Trainer:
    """Fits ``potential`` to ``train`` by the sum of ``losses``; ``validation`` drives early stopping and
    best-model selection; ``test`` is only reported. ``fresh`` (on-the-fly augmentation) returns the
    training set of an epoch: ``train`` plus that epoch's freshly derived structures."""

    def __init__(self, potential, settings: TrainSettings, train: FeatureSet, losses: list,
                 validation: FeatureSet | None = None, test: FeatureSet | None = None,
                 fresh: Callable[[int], FeatureSet] | None = None, checkpoint: str | Path | None = None,
                 fingerprint: str = ""):
        self.potential, self.settings, self.train, self.losses = potential, settings, train, losses
        self.validation, self.test, self.fresh = validation, test, fresh
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.fingerprint = fingerprint
        self.needs_forces = any(term.needs_forces for term in losses)
        params = list(potential.networks.parameters())
        if settings.optimizer.method == "lbfgs":
            # One iteration per step; max_eval bounds the line search (its default, 5·max_iter/4 = 1 here,
            # would leave the line search no evaluation at all and stall after a few epochs).
            self.optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=26,
                                               history_size=settings.optimizer.lbfgs_history,
                                               line_search_fn="strong_wolfe", tolerance_grad=1e-15,
                                               tolerance_change=0.0)
        else:
            self.optimizer = torch.optim.Adam(params, lr=settings.optimizer.learning_rate)
        self.history: list[dict] = []
        self._memo: dict | None = None
        self._batch_outputs: _BatchOutputs | None = None
        self.epoch = 0
        self.best = {"loss": float("inf"), "epoch": -1, "state": None}
        self.bad_epochs = 0

    def loss(self, data: FeatureSet, differentiable: bool = True):
        """The summed loss terms, and the outputs they were computed from."""
        outputs = evaluate(self.potential, data, forces=self.needs_forces, create_graph=differentiable)
        return sum(term(outputs, data) for term in self.losses), outputs

    def _flat_parameters(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.potential.networks.parameters()])

    def _lbfgs_closure(self, data: FeatureSet):
        """Loss and gradients, remembered for the last parameters: L-BFGS re-evaluates at the start of each
        step the point its line search just accepted, and the epoch's metrics need it once more."""
        parameters = list(self.potential.networks.parameters())

        def closure():
            flat = self._flat_parameters()
            memo = self._memo
            if memo is not None and memo["data"] is data and torch.equal(memo["parameters"], flat):
                for p, g in zip(parameters, memo["grads"]):
                    p.grad = g.clone()
                return memo["loss"]
            self.optimizer.zero_grad()
            if self.needs_forces and isinstance(data.jacobians, StreamedJacobians):
                value, outputs = self._streamed_loss(data)
            else:
                value, outputs = self.loss(data)
                value.backward()
            self._memo = {"data": data, "parameters": flat, "loss": value.detach(),
                          "grads": [p.grad.clone() for p in parameters],
                          "outputs": Outputs(outputs.energies.detach(),
                                             None if outputs.forces is None else outputs.forces.detach())}
            return value

        return closure

    def _streamed_loss(self, data: FeatureSet) -> tuple[torch.Tensor, Outputs]:
        """The full-batch loss (detached) with its gradient accumulated in the weights' ``.grad``, and the outputs,
        when the Jacobians are streamed: the terms without forces see the whole set at once; the force terms are
        summed chunk by chunk (``ForceLoss.part``), each chunk's Jacobians built, differentiated and freed with its
        graph before the next, so only one chunk's are ever held. Equal to the stored loss up to rounding."""
        whole = [term for term in self.losses if not term.needs_forces]
        chunked = [(term, term.count(data)) for term in self.losses if term.needs_forces]
        outputs = evaluate(self.potential, data)
        value = sum((term(outputs, data) for term in whole), data.energy.new_zeros(()))
        if value.requires_grad:
            value.backward()
        value, forces = value.detach(), []
        for chunk in data.jacobians.chunks():
            part = data.subset(torch.tensor(chunk, device=data.n_atoms.device))
            out = evaluate(self.potential, part, forces=True, create_graph=True)
            piece = sum(term.part(out, part, count) for term, count in chunked)
            piece.backward()
            value, forces = value + piece.detach(), forces + [out.forces.detach()]
            del part, out, piece   # before the next chunk is built
        return value, Outputs(outputs.energies.detach(), torch.cat(forces) if forces else None)

    def _step(self, data: FeatureSet, epoch: int) -> None:
        if self.settings.optimizer.method == "lbfgs":
            self.optimizer.step(self._lbfgs_closure(data))
            return
        generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + epoch)
        streamed = data is self.train and isinstance(data.jacobians, StreamedJacobians)
        self._batch_outputs = _BatchOutputs(data) if streamed else None
        for indices in data.batches(self.settings.optimizer.batch_size, generator):
            batch = data.subset(indices)
            self.optimizer.zero_grad()
            value, outputs = self.loss(batch)
            value.backward()
            self.optimizer.step()
            if streamed:
                self._batch_outputs.add(indices, batch, outputs)
            del batch, value, outputs   # before the next batch is built: two batches' Jacobians need not coexist

    def run(self, progress: bool = False, resume: bool = False, stop: StopFlag | None = None) -> list[dict]:
        """Train until ``iterations`` epochs, early stopping, the time budget or a stop request; returns the
        history."""
        if resume:
            self._load_checkpoint()
        limits = self.settings.optimizer
        if self.checkpoint is not None and not resume:
            self.save_checkpoint()   # the first finite state: what a run that diverges early keeps for --resume
        last_save = time.monotonic()
        # "seconds" in the history is training time, summed over interrupted and resumed sessions.
        started = time.perf_counter() - (self.history[-1]["seconds"] if self.history else 0.0)
        with progress_bar(limits.iterations, "train", "epochs", enabled=progress) as advance:
            advance(self.epoch, before=True)
            while self.epoch < limits.iterations:
                data = self.train if self.fresh is None else self.fresh(self.epoch)
                self._step(data, self.epoch)
                row = self._record(time.perf_counter() - started)
                self._check_finite(row)
                advance(1, **self._status(row))
                self.epoch += 1
                budget = limits.max_minutes
                finished = self._early_stop() or (budget is not None and row["seconds"] >= 60 * budget)
                due = finished or self.epoch == limits.iterations or \
                    time.monotonic() - last_save >= self.settings.runtime.checkpoint_every
                if self.checkpoint is not None and due:
                    self.save_checkpoint()
                    last_save = time.monotonic()
                if finished:
                    break
                if stop is not None and stop.requested:
                    where = f"; progress saved in {self.checkpoint}, continue with --resume" if self.checkpoint else ""
                    if self.checkpoint is not None:
                        self.save_checkpoint()
                    stopped = Interrupted(stop.signum)
                    stopped.add_note(f"training stopped after epoch {self.epoch}{where}")
                    raise stopped
        if self.best["state"] is not None:
            self.potential.load_state_dict(self.best["state"])
        return self.history

    def _record(self, seconds: float) -> dict:
        row = {"epoch": self.epoch + 1}
        memo = self._memo
        with torch.no_grad():
            if self._batch_outputs is not None:
                outputs = self._batch_outputs.outputs()
                loss = sum(term(outputs, self.train) for term in self.losses)
            elif memo is not None and memo["data"] is self.train and torch.equal(memo["parameters"],
                                                                                self._flat_parameters()):
                loss, outputs = memo["loss"], memo["outputs"]
            else:
                loss, outputs = self.loss(self.train, differentiable=False)
            row["loss"] = float(loss)
            row.update(_measures(outputs, self.train, "train"))
            if self.validation is not None:
                loss, outputs = self.loss(self.validation, differentiable=False)
                row["val_loss"] = float(loss)
                row.update(_measures(outputs, self.validation, "val"))
            if self.test is not None:
                row.update(_measures(evaluate(self.potential, self.test), self.test, "test"))
        row["seconds"] = round(seconds, 3)
        self.history.append(row)
        return row

    def _check_finite(self, row: dict) -> None:
        """Stop with TrainingDiverged when the epoch's loss or weights are not finite. Every checkpoint is saved
        after this check, so the one on disk holds the last finite state it saw, from which ``--resume``
        continues (with a smaller learning rate)."""
        if math.isfinite(row["loss"]) and bool(torch.isfinite(self._flat_parameters()).all()):
            return
        what = f"the training loss became {row['loss']}" if not math.isfinite(row["loss"]) else \
            "the network weights became NaN or infinite"
        hint = " with a smaller --learning-rate" if self.settings.optimizer.method == "adam" else ""
        kept = (f"; the last finite state saved (after epoch {self._saved_epoch}) is kept in {self.checkpoint}: "
                f"continue from it with --resume{hint}") if self.checkpoint is not None else \
            ("; try a smaller learning rate" if hint else "")
        raise TrainingDiverged(f"training diverged: {what} in epoch {row['epoch']}{kept}")

    @staticmethod
    def _status(row: dict) -> dict:
        """The progress line's errors, to three significant figures (0.0213, never 0.00)."""
        fields = {"MAE/RMSE meV/atom: train": f"{sig(row['train_mae'])}/{sig(row['train_rmse'])}"}
        for prefix in ("val", "test"):
            if f"{prefix}_mae" in row:
                fields[prefix] = f"{sig(row[f'{prefix}_mae'])}/{sig(row[f'{prefix}_rmse'])}"
        return fields

    def _early_stop(self) -> bool:
        """Track the best validation loss; True when it has not improved for ``patience`` epochs."""
        if self.validation is None:
            return False
        current = self.history[-1]["val_loss"]
        if current < self.best["loss"]:
            self.best = {"loss": current, "epoch": self.epoch,
                         "state": copy.deepcopy(self.potential.state_dict())}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        patience = self.settings.optimizer.patience
        return patience is not None and self.bad_epochs >= patience

    # -- checkpoints ------------------------------------------------------------------------------

    def _checkpoint_payload(self) -> dict:
        return {
            "kind": CHECKPOINT_KIND, "format": CHECKPOINT_FORMAT, "pyita_version": __version__,
            "epoch": self.epoch, "model": self.potential.state_dict(), "optimizer": self.optimizer.state_dict(),
            "history": self.history, "best": self.best, "bad_epochs": self.bad_epochs,
            "settings": self.settings.as_dict(), "fingerprint": self.fingerprint,
        }

    def save_checkpoint(self) -> None:
        atomic_torch_save(self._checkpoint_payload(), self.checkpoint)
        self._saved_epoch = self.epoch

    def _load_checkpoint(self) -> None:
        path = self.checkpoint
        if path is None or not path.is_file():
            raise PyitaError(f"cannot resume: no checkpoint at {path}")
        try:
            saved = torch.load(path, map_location=self.potential.device, weights_only=True)
        except Exception as exc:  # damaged or foreign file
            raise PyitaError(f"cannot resume: {path} is not a readable checkpoint ({exc})") from None
        if not isinstance(saved, dict) or saved.get("kind") != CHECKPOINT_KIND or \
                saved.get("format") != CHECKPOINT_FORMAT:
            raise PyitaError(f"cannot resume: {path} is not a pyita checkpoint of format {CHECKPOINT_FORMAT}")
        if saved["fingerprint"] != self.fingerprint:
            raise PyitaError(f"cannot resume from {path}: it was made with different training data")
        mine, theirs = self.settings.as_dict(), saved["settings"]
        # a setting newer than the checkpoint counts as its default there
        defaults = TrainSettings().as_dict()
        changed = [k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k, defaults[k])]
        if changed:
            raise PyitaError(f"cannot resume from {path}: settings differ ({', '.join(changed)})")
        self.potential.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.settings.optimizer.method == "adam":   # the learning rate given now (it may differ: RESUMABLE_CHANGES)
            for group in self.optimizer.param_groups:
                group["lr"] = self.settings.optimizer.learning_rate
        self.epoch, self.history = saved["epoch"], saved["history"]
        self._saved_epoch = self.epoch
        self.best, self.bad_epochs = saved["best"], saved["bad_epochs"]
