"""Training with mixed-scale batches (EQSR's data processing), EMA, exact resume."""
