"""lmforge-acme-filters: an example third-party lmforge plugin (the ``acme-blocklist`` filter).

The entry point (group ``lmforge.plugins``) is ``lmforge_acme_filters.plugin``.
"""

__version__ = "0.1.0"
