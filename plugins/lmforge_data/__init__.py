"""lmforge's first-party data plugin: the ``data/curate`` stage, sources and filters.

Only :mod:`lmforge_data.plugin` and :mod:`lmforge_data.config` are imported at discovery; every
other module is imported when a component is built.
"""
