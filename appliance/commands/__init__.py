"""Subcommands of the ``appliance`` CLI, one module per area."""
