"""DeltaNet and hybrid DeltaNet models (flash-linear-attention's format) and views of their memory.

Importing this package registers model_type "delta_net" with transformers' Auto classes, replacing fla's
registration if fla was imported first (the weights and config are the same; the modelling code here runs
on our kernels and is traceable). Importing fla afterwards registers fla's classes again: call `register()`
after it.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from workbench.deltanet.configuration import DeltaNetConfig
from workbench.deltanet.modeling import DeltaNetForCausalLM, DeltaNetModel


def register() -> None:
    """Make transformers' Auto classes build our classes for model_type "delta_net"."""
    AutoConfig.register("delta_net", DeltaNetConfig, exist_ok=True)
    AutoModelForCausalLM.register(DeltaNetConfig, DeltaNetForCausalLM, exist_ok=True)


register()

__all__ = ["DeltaNetConfig", "DeltaNetForCausalLM", "DeltaNetModel", "register"]
