"""The ``sknet`` command line; it uses only sknet's public API."""
