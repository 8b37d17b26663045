"""DeltaNet and hybrid DeltaNet models (flash-linear-attention's format) and views of their memory.

Importing this package registers model_type "delta_net" with transformers' Auto classes, replacing fla's
registration if fla was imported first (the weights and config are the same; the modelling code here runs
on our kernels and is traceable).
"""

from transformers import AutoConfig, AutoModelForCausalLM

from workbench.deltanet.configuration import DeltaNetConfig
from workbench.deltanet.modeling import DeltaNetForCausalLM, DeltaNetModel

AutoConfig.register("delta_net", DeltaNetConfig, exist_ok=True)
AutoModelForCausalLM.register(DeltaNetConfig, DeltaNetForCausalLM, exist_ok=True)

__all__ = ["DeltaNetConfig", "DeltaNetForCausalLM", "DeltaNetModel"]
