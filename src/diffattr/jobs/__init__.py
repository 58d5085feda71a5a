"""File-level jobs, the orchestration layer: each reads its input files, calls the library
kernels and writes its outputs with provenance.

One module per rule file (``rules/<name>.smk`` -> ``diffattr.jobs.<name>``), one function per
rule, named after it; ``scripts/<rule script>.py`` calls exactly one of them inside
:func:`diffattr.jobs.common.job_logging`. Every function takes plain values and paths, so it
runs the same from a script, a test or a REPL. Kernel modules never import this package.

This file imports nothing: ``import diffattr.jobs.lds`` loads only what that module needs.
"""
