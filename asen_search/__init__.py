"""asen-search: fine-grained, attribute-specific fashion similarity search (ASEN++).

The three layers live in the repository's top-level folders `model/`, `index/` and `service/`;
this package maps them under one import name (`asen_search.model`, `asen_search.index`,
`asen_search.service`) through symbolic links, so that an installed copy claims no generic
top-level names. docs/architecture.md describes the layers.
"""
