"""Jinja prompt templates, one set per role."""
