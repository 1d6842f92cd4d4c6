"""Deduplicators (component kind ``dedup``): ``exact`` and ``minhash``, and the distributed
cluster step they share (:mod:`lmforge_data.dedup.cluster`)."""
