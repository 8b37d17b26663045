"""Reading the residual stream as predictions: the logit lens (`logit_lens`) and the tuned lens (`tuned_lens`)."""
