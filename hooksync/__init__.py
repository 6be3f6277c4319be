"""The ``hooksync`` command: the composition root.

It is the only package that sees every other one. It wires settings, the database and the
broker into the processes of the Procfile (``hooksync.cli``) and composes the Celery app that
runs both the workers' and the scheduler's tasks (``hooksync.tasks``). Layers below it
import downwards only (ARCHITECTURE.md §2).
"""
