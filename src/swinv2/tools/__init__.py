"""Tools that are not library API: speed, memory and maximum-resolution benchmarks, the memory planner,
and the paper's studies in miniature. Each is a ``swinv2`` command; nothing in the library imports them."""
