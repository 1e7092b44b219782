"""Reference calculators, Taylor-error checks and labelling (``pyita check``, ``pyita label``).

    from pyita.check import CheckSettings, check, run_check, run_label, make_calculator
    result = check("sample", "gfn1-xtb", CheckSettings(deltas=(0.01, 0.03), parents=10))
    result.summary["recommendation"]
"""

from pyita.check.calculators import (PRESETS, CalculationError, CalculatorError, CalculatorSpec, compute,
                                     make_calculator, resolve_calculator)
from pyita.check.check import check, fit_slope, recommend, run_check
from pyita.check.label import Checkpoint, label_structures, run_label
from pyita.check.report import CheckResult, print_report, write_check
from pyita.check.settings import CheckSettings

__all__ = ["PRESETS", "CalculationError", "CalculatorError", "CalculatorSpec", "compute", "make_calculator",
           "resolve_calculator", "CheckResult", "CheckSettings", "check", "fit_slope", "recommend", "run_check",
           "print_report", "write_check", "Checkpoint", "label_structures", "run_label"]
