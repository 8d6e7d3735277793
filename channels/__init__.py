"""Channels: one module per platform, all behind the interface in `base`."""
