"""Checking an address before anything is sent to it: email addresses with email-validator, phone numbers
with phonenumbers. A bad contact is reported with its reason so the row can be marked failed while the rest
of the batch goes on."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.syntax import validate_email_local_part

#: Longest address email-validator accepts (RFC 3696 errata, as the library applies it).
MAX_ADDRESS_LENGTH = 254


def check_email(address: str) -> tuple[str, str | None]:
    """(normalised address, None) when ``address`` is a valid email address, else (address, reason).

    Syntax only: no DNS look-up, so a run never waits on a resolver for each recipient. Campaigns send to
    many addresses on few domains, and checking a domain costs the library a hundred times more than
    checking a local part, so each domain's verdict is cached and plain ASCII addresses are checked as two
    parts; anything else goes through the library's whole check.
    """
    local, at, domain = address.rpartition("@")
    if at and address.isascii() and len(address) <= MAX_ADDRESS_LENGTH and '"' not in local:
        normalized_domain = _domain(domain)
        if normalized_domain is not None:
            try:
                validate_email_local_part(local)
            except EmailNotValidError:
                pass
            else:
                return f"{local}@{normalized_domain}", None
    try:
        return validate_email(address, check_deliverability=False).normalized, None
    except EmailNotValidError as exc:
        return address, f"invalid email address: {exc}"


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The library's normalised form of ``domain``, or None when it rejects it."""
    try:
        return validate_email(f"postmaster@{domain}", check_deliverability=False).ascii_domain
    except EmailNotValidError:
        return None


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
