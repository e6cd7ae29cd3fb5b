"""Command palette entries for the session screen: the same controls as its keys, found by name."""

from __future__ import annotations

from textual.command import DiscoveryHit, Hit, Hits, Provider


class SessionCommands(Provider):
    """Asks the screen which actions apply now (a read-only screen offers no controls)."""

    def _entries(self) -> list:
        entries = getattr(self.screen, "palette_commands", None)
        return entries() if entries else []

    async def discover(self) -> Hits:
        for name, help_text, callback in self._entries():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
