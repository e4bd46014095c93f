"""Kept so that jobs written against the documented ``appliance.fencing`` keep working: ``appliance.sdk`` is the
jobs' module now."""

from appliance.sdk import check_fence, complete_slot, issue_fence

__all__ = ["check_fence", "complete_slot", "issue_fence"]
