"""Checking an address before anything is sent to it: email addresses with email-validator, phone numbers
with phonenumbers. A bad contact is reported with its reason so the row can be marked failed while the rest
of the batch goes on."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email


def check_email(address: str) -> tuple[str, str | None]:
    """(normalised address, None) when ``address`` is a valid email address, else (address, reason).

    Syntax only: no DNS look-up, so a run never waits on a resolver for each recipient.
    """
    try:
        return validate_email(address, check_deliverability=False).normalized, None
    except EmailNotValidError as exc:
        return address, f"invalid email address: {exc}"


def check_phone(number: str) -> tuple[str, str | None]:
    """(E.164 number, None) when ``number`` is a valid phone number in international form (``+91 98…``),
    else (number, reason)."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        return number, f"invalid phone number: {exc}"
    if not phonenumbers.is_valid_number(parsed):
        return number, "invalid phone number: not a valid number for its country code"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


def check_contact(channel: str, contact: str) -> tuple[str, str | None]:
    """Check ``contact`` for ``channel`` (``email``, or ``whatsapp``/``voice``, which take phone numbers)."""
    return check_email(contact) if channel == "email" else check_phone(contact)
