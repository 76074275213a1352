"""Results -> figures (matplotlib, Agg backend) and tables."""
