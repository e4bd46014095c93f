"""The job packs that ship with the appliance: ``crm`` (seed 004's scheduled jobs) and ``knowledge`` (the
indexer). Each is a ``Pack`` (``appliance.kernel.contract.packs``) named in the ``appliance.packs`` entry-point group;
nothing outside a pack imports it, so a pack of one's own plugs in the same way."""
