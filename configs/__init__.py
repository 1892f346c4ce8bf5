"""Configuration shipped with Tandem as package data (``tandem.configs``).

``default.yaml`` is read through :mod:`importlib.resources`, so it is found in a wheel
install as well as in a source checkout; see :func:`tandem.services.config.load_config`.
"""
