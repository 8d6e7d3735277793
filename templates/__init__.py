"""Shipped templates. A package only so that an installed broadcaster can find its files."""
