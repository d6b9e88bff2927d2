"""Pydantic models (journey spec, events, workflow payloads) and sqlmodel tables."""
