"""Reading the residual stream as predictions: the logit lens (`logit_lens`)."""
