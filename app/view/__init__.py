"""A session as the UIs see it, without Textual: the state rebuilt from the record, and its log lines.

Widgets and screens both build on it, so a widget never imports a screen.
"""
