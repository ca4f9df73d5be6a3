"""Modal screens: help, forms for settings, model info."""
