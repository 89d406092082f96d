"""Data: sources (raw examples) -> featurisers (fixed shapes) -> mixture -> pipeline."""
