"""Plug-in normalizers: the contract (:mod:`.contract`), the sanity battery (:mod:`.battery`) and
its short GAN-training part (:mod:`.training`).

>>> from sntheory.plugin import try_normalizer, format_summary
>>> result = try_normalizer("mypkg.norms:my_norm", out="try-my-norm")  # doctest: +SKIP
>>> print(format_summary(result))                                      # doctest: +SKIP

``sntheory try mypkg.norms:my_norm [--profile quick|full] [--out DIR] [--seed N]`` does the same
from the shell (:mod:`sntheory.cli_try`); ``--set training=false`` skips the training part.
"""
from .battery import (BASELINES, PROFILES, BatteryConfig, BatteryResult, Entry,
                      baseline_entries, format_summary, run_battery, try_normalizer,
                      write_battery)
from .contract import (GEOMETRY_KEYWORDS, FunctionParametrization, NormalizerContractError,
                       NormalizerContractTypeError, PluginNormalizer, load_normalizer,
                       module_geometry, register_normalizer, registered_normalizers,
                       unregister_normalizer, validate_normalizer)
from .training import TrainingResult, TrainingSettings, plot_training, training_part

__all__ = ["GEOMETRY_KEYWORDS", "FunctionParametrization", "NormalizerContractError",
           "NormalizerContractTypeError", "PluginNormalizer", "load_normalizer",
           "module_geometry", "register_normalizer", "registered_normalizers",
           "unregister_normalizer", "validate_normalizer",
           "BASELINES", "PROFILES", "BatteryConfig", "BatteryResult", "Entry", "baseline_entries",
           "format_summary", "run_battery", "try_normalizer", "write_battery",
           "TrainingResult", "TrainingSettings", "plot_training", "training_part"]
