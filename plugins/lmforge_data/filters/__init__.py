"""Document filters (kind ``filter``): each factory takes its config and returns a picklable
callable ``text -> lmforge.FilterResult``."""
