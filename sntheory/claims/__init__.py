"""One module per claim: statement, hypotheses, bounds, estimator and check."""
