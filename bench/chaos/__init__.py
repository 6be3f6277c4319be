"""The fault-injection suite (``make chaos``): hooksync under kill -9, outages and bursts.

Modules: ``cluster`` (the processes), ``load`` (signed webhooks, retried as providers do),
``faults`` (the injector), ``fake_api`` (the external API and the effects log),
``app_receiver`` (the app's endpoint), ``checks`` (the end assertions, pure), ``report``
(the table), ``profile`` (default and CI), ``run`` (the driver).
"""
