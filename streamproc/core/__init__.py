"""The pipeline core, no I/O: event contract, decode, fold, rollup declarations, histograms, wire encoding.

Imports only the standard library, msgspec and the root foundation modules
(never :mod:`streamproc.config`, which builds on :mod:`streamproc.core.keys`);
:mod:`streamproc.core.enrich` adds the user-agent and country-database readers.
"""
