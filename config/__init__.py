"""Configuration: typed settings, the integrations file, frequencies, the command line."""
