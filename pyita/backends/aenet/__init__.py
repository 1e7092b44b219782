"""The aenet backend: write complete aenet run folders, run aenet where it is installed, read its results.

``run_aenet_prepare`` (``pyita aenet prepare``) writes a self-contained folder: generate.in, one .stp per species,
train.in, predict.in, run.sh, the structures under ``xsf/``, and a record (``pyita-aenet.json``,
``structures.csv``, ``test-parents.txt``). Test parents are held out by PyITA, not by aenet: aenet's
TESTPERCENT picks test structures at random among everything in the training set file, so with augmented
data it would put derived structures of a test parent into training. The test parents and all their derived
structures are therefore left out of generate.in, TESTPERCENT is 0, and the test parents are predicted by
predict.x instead.

``run_aenet_run`` (``pyita aenet run``) finds generate.x, train.x and predict.x (version-suffixed names such as
``generate.x-2.0.4-gfortran_serial`` included), runs them with a progress display, keeps their output in
``generate.out``, ``train.out`` and ``predict.out``, and decides success from that output, because the
programs exit with status 0 after most errors. It then turns predict.x's output into the same error tables the
embedded trainer produces (per-structure per-atom energy errors in meV/atom, per-component force errors in
eV/Å). ``train_and_evaluate_aenet`` does all of it for the experiment runner.

``run_aenet_export`` (``pyita aenet export``) writes a PyITA potential as aenet .nn files; ``read_aenet_potential``
(``pyita.model.aenet``, also behind ``load_potential``) reads aenet's .nn files into a PyITA potential.
"""

from pyita.backends.aenet.experiment import experiment_backend, train_and_evaluate_aenet
from pyita.backends.aenet.folder import write_run_folder
from pyita.backends.aenet.nn import run_aenet_export
from pyita.backends.aenet.prepare import run_aenet_prepare
from pyita.backends.aenet.executables import find_executables
from pyita.backends.aenet.results import collect_results, error_rows
from pyita.backends.aenet.run import run_aenet_run
from pyita.backends.aenet.settings import ENV_VARS, PROGRAMS, AenetSettings


__all__ = ["AenetSettings", "run_aenet_prepare", "write_run_folder", "run_aenet_run", "collect_results",
           "find_executables", "error_rows", "train_and_evaluate_aenet", "experiment_backend",
           "PROGRAMS", "ENV_VARS", "run_aenet_export"]
