"""Reading the residual stream as predictions: the logit lens (`logit_lens`), the tuned lens (`tuned_lens`) and
direct logit attribution (`attribution`); and activation patching (`patching`), which asks which layer and
position carry a behaviour."""
