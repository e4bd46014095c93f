"""Kept so that jobs written against the documented ``appliance.fencing`` keep working: fencing lives in
``appliance.kernel.fencing`` since the kernel became a package of its own."""

from appliance.kernel.fencing import check_fence, complete_slot, issue_fence

__all__ = ["check_fence", "complete_slot", "issue_fence"]
