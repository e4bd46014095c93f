"""Kept so that packs written against the documented ``appliance.kernel.packs.Pack`` keep working:
``appliance.sdk`` is the packs' module now."""

from appliance.sdk import Pack, SeedNames

__all__ = ["Pack", "SeedNames"]
