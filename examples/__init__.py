"""The demo project `formicary demo` copies and runs on (shipped as package data)."""
