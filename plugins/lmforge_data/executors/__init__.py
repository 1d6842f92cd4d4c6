"""Executors of the curation plan (component kind ``executor``): ``local`` and ``ray``."""
