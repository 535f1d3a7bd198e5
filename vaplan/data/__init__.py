"""Data containers, the LLP annotation loader and the feature store."""
