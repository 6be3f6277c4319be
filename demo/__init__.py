"""`make demo`: a simulated external API and app around a real hooksync deployment.

Also used by the end-to-end tests, which drive the same fake tracker and app receiver.
"""
