"""What ``appliance run`` needs to hand the appliance to Supervisor.

- ``plan``: which services are embedded, supervised or external, and the environment ``supervisord.conf``
  expands (``%(ENV_...)s``) to start them;
- ``prepare``: directories, log files, the embedded PostgreSQL cluster and the database migrations;
- ``fatal``: the event listener that stops supervisord when a critical program goes FATAL;
- ``pid1``: supervisord's own main loop as PID 1, with an exit code that tells a FATAL stop apart.
"""
