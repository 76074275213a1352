"""Monte Carlo engine: mergeable moments, CIs, sequential stopping, verdicts, resumable store."""
from .engine import CaseResult, StoppingRule, Task, WorkUnit, execute_unit, make_executor, run_tasks
from .estimators import Estimate, Moments, delta_estimate, mean_estimate, t_quantile
from .store import ResultStore, atomic_write_text
from .verdicts import BoundCheck, Verdict, assign_verdicts, holm_reject

__all__ = ["CaseResult", "StoppingRule", "Task", "WorkUnit", "execute_unit", "make_executor",
           "run_tasks", "Estimate", "Moments", "delta_estimate", "mean_estimate", "t_quantile",
           "ResultStore", "atomic_write_text", "BoundCheck", "Verdict", "assign_verdicts",
           "holm_reject"]
