"""Email addresses as one person: validated, and normalised the way mailbox providers treat them.

Kept apart from the subscriber list so that the settings (staff addresses) and the email
channel (its sender) can check an address without loading anything else.
"""

from __future__ import annotations

from broadcaster.errors import InputError


def normalize_address(address: str, *, keep_case: bool = False) -> str:
    """The address as mailbox providers treat it: validated and normalised by email-validator
    (domain lowercased), and the local part lowercased too unless `keep_case` (RFC 5321 lets a
    server tell Ana@ from ana@, but no common provider does: one person, one subscription).
    InputError if it is not an address."""
    from email_validator import EmailNotValidError, validate_email

    try:
        checked = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InputError(f"{address.strip()!r} is not a valid email address: {exc}") from None
    normal = checked.ascii_email or checked.normalized
    return normal if keep_case else normal.lower()
