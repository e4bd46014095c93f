"""``appliance backup`` and ``appliance restore``: one archive holding the PostgreSQL database (a ``pg_dump`` in
custom format), each job pack's data kept elsewhere (the knowledge pack: its Qdrant collection) and a manifest
with versions and the sha256 of every file; restored only after every check has passed (docs/operations.md
"Backup and restore").

- ``manifest``: what the manifest holds and the checks of its format;
- ``archive``: writing the archive, reading it back with every checksum verified, extracting it;
- ``postgres``: the database snapshot, ``pg_dump`` and ``pg_restore``;
- ``home``: what of the appliance runs in an ``APPLIANCE_HOME``;
- ``create`` and ``restore``: the two commands' steps.
"""
