"""rankface."""
