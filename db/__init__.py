"""Persistence: keyword-only functions over a sqlmodel Session, one module per table family."""
