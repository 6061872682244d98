"""Embedded open-weight models: locating and fetching their GGUF weights."""
